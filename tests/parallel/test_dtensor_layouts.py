"""Layouts of every tiny-model variable (the table below), rule errors, and checkpoints of sharded
variables restored into sharded and unsharded models."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.models.layers import Mlp
from basic_tf.parallel import dtensor as pd
from basic_tf.training import checkpoints

SIZES = {"batch": 2, "model": 4}
# Every variable of models/tiny.gin's two towers and head, with its layout on a (batch, model) mesh:
# one entry per dimension, "model" = split over the model axis, "-" = whole. Weights are never
# split over "batch". A new variable must get a deliberate rule (layouts.py) and a line here.
TINY_PLAN = """
    dual_encoder/log_logit_scale                               scalar
    image_tower/stem_conv1/kernel                              -,-,-,-
    image_tower/stem_conv1/bias                                -
    image_tower/stem_bn/gamma                                  -
    image_tower/stem_bn/beta                                   -
    image_tower/stem_bn/moving_mean                            -
    image_tower/stem_bn/moving_variance                        -
    image_tower/stem_conv2/kernel                              -,-,-,-
    image_tower/stem_conv2/bias                                -
    image_tower/stage1_block0/norm/gamma                       -
    image_tower/stage1_block0/norm/beta                        -
    image_tower/stage1_block0/norm/moving_mean                 -
    image_tower/stage1_block0/norm/moving_variance             -
    image_tower/stage1_block0/expand/kernel                    -,model
    image_tower/stage1_block0/bn1/gamma                        -
    image_tower/stage1_block0/bn1/beta                         -
    image_tower/stage1_block0/bn1/moving_mean                  -
    image_tower/stage1_block0/bn1/moving_variance              -
    image_tower/stage1_block0/depthwise/kernel                 -,-,model,-
    image_tower/stage1_block0/bn2/gamma                        -
    image_tower/stage1_block0/bn2/beta                         -
    image_tower/stage1_block0/bn2/moving_mean                  -
    image_tower/stage1_block0/bn2/moving_variance              -
    image_tower/stage1_block0/project/kernel                   model,-
    image_tower/stage1_block0/project/bias                     -
    image_tower/stage1_block0/se_reduce/kernel                 model,-
    image_tower/stage1_block0/se_reduce/bias                   -
    image_tower/stage1_block0/se_expand/kernel                 -,model
    image_tower/stage1_block0/se_expand/bias                   model
    image_tower/stage1_block0/shortcut/kernel                  -,model
    image_tower/stage1_block0/shortcut/bias                    model
    image_tower/stage2_block0/relative_bias_table              -,-
    image_tower/stage2_block0/transformer/norm1/gamma          -
    image_tower/stage2_block0/transformer/norm1/beta           -
    image_tower/stage2_block0/transformer/attention/qkv/kernel -,model
    image_tower/stage2_block0/transformer/attention/qkv/bias   model
    image_tower/stage2_block0/transformer/attention/out/kernel model,-
    image_tower/stage2_block0/transformer/attention/out/bias   -
    image_tower/stage2_block0/transformer/norm2/gamma          -
    image_tower/stage2_block0/transformer/norm2/beta           -
    image_tower/stage2_block0/transformer/mlp/fc1/kernel       -,model
    image_tower/stage2_block0/transformer/mlp/fc1/bias         model
    image_tower/stage2_block0/transformer/mlp/fc2/kernel       model,-
    image_tower/stage2_block0/transformer/mlp/fc2/bias         -
    image_tower/stage2_block0/transformer/shortcut/kernel      -,model
    image_tower/stage2_block0/transformer/shortcut/bias        model
    image_tower/final_norm/gamma                               -
    image_tower/final_norm/beta                                -
    image_tower/projection/kernel                              model,-
    text_tower/position_embedding                              -,model
    text_tower/token_embedding/embeddings                      -,model
    text_tower/block0/norm1/gamma                              -
    text_tower/block0/norm1/beta                               -
    text_tower/block0/attention/qkv/kernel                     -,model
    text_tower/block0/attention/qkv/bias                       model
    text_tower/block0/attention/out/kernel                     model,-
    text_tower/block0/attention/out/bias                       -
    text_tower/block0/norm2/gamma                              -
    text_tower/block0/norm2/beta                               -
    text_tower/block0/mlp/fc1/kernel                           -,model
    text_tower/block0/mlp/fc1/bias                             model
    text_tower/block0/mlp/fc2/kernel                           model,-
    text_tower/block0/mlp/fc2/bias                             -
    text_tower/block1/norm1/gamma                              -
    text_tower/block1/norm1/beta                               -
    text_tower/block1/attention/qkv/kernel                     -,model
    text_tower/block1/attention/qkv/bias                       model
    text_tower/block1/attention/out/kernel                     model,-
    text_tower/block1/attention/out/bias                       -
    text_tower/block1/norm2/gamma                              -
    text_tower/block1/norm2/beta                               -
    text_tower/block1/mlp/fc1/kernel                           -,model
    text_tower/block1/mlp/fc1/bias                             model
    text_tower/block1/mlp/fc2/kernel                           model,-
    text_tower/block1/mlp/fc2/bias                             -
    text_tower/final_norm/gamma                                -
    text_tower/final_norm/beta                                 -
    text_tower/projection/kernel                               model,-
"""


def _render(plan) -> str:
    return "\n" + "\n".join(f"    {r.path:<58} {','.join(a or '-' for a in r.spec) or 'scalar'}"
                             for r in plan) + "\n"


@pytest.fixture(scope="module")
def tiny_model():
    config.parse(["models/tiny"])
    keras.utils.set_random_seed(0)
    return from_gin.dual_encoder()


def test_every_tiny_variable_has_the_listed_layout(tiny_model):
    plan = pd.plan_layouts(tiny_model.variables, pd.layout_rules(), SIZES)
    assert len(plan) == len(tiny_model.variables)
    assert _render(plan) == TINY_PLAN


def test_vit_cls_and_logit_bias_variables_are_covered():
    config.parse(["models/tiny"], [
                            "dual_encoder_config.image_tower='vit'", "vit_config.patch_size=8",
                            "vit_config.width=64", "vit_config.depth=1", "vit_config.num_heads=2",
                            "vit_config.pooling='cls'", "text_tower_config.pooling='cls'",
                            "dual_encoder_config.use_logit_bias=True"])
    model = from_gin.dual_encoder()
    specs = {r.path: r.spec for r in pd.plan_layouts(model.variables, pd.layout_rules(), SIZES)}
    assert specs["image_tower/patch_embedding/kernel"] == (None,) * 4
    assert specs["image_tower/position_embedding"] == (None, "model")
    assert specs["image_tower/cls_token"] == specs["text_tower/cls_token"] == (None,)
    assert specs["dual_encoder/logit_bias"] == ()


def test_rule_errors_name_the_variable():
    layer = keras.layers.Dense(6, name="head")
    layer.build((None, 8))
    with pytest.raises(ValueError, match=r"(?s)no layout rule matches.*head/kernel \[8, 6\]"):
        pd.plan_layouts(layer.variables, pd.layout_rules(), SIZES)
    with pytest.raises(ValueError, match=r"head/kernel of shape \[8, 6\].*does not divide"):
        pd.plan_layouts(layer.variables, [pd.Rule("kernel$", (None, "model")),
                                          pd.Rule("bias$", pd.REPLICATED)], SIZES)
    with pytest.raises(ValueError, match=r"1-D spec.*head/kernel"):
        pd.plan_layouts(layer.variables, [pd.Rule("", ("model",))], SIZES)
    with pytest.raises(ValueError, match="layout_rules.name='nope'"):
        pd.layout_rules("nope")


def test_checkpoint_of_a_sharded_model_restores_sharded_and_unsharded(tiny_model, tmp_path):
    config.parse(["models/tiny"])
    mesh = pd.make_mesh(2, 4, device_type="CPU")
    keras.utils.set_random_seed(1)
    sharded = from_gin.dual_encoder()
    pd.shard_model(sharded, mesh, pd.layout_rules())
    path = tf.train.Checkpoint(model=sharded).save(os.path.join(tmp_path, "model"))
    expected = [pd.to_numpy(v) for v in sharded.variables]
    assert not np.allclose(expected[1], tiny_model.variables[1].numpy())  # other init

    # Into an unsharded model (export): tiny_model, built with another seed.
    tf.train.Checkpoint(model=tiny_model).restore(path).assert_consumed()
    for v, e in zip(tiny_model.variables, expected):
        np.testing.assert_array_equal(v.numpy(), e, err_msg=v.path)
    # Into another sharded model.
    keras.utils.set_random_seed(2)
    again = from_gin.dual_encoder()
    pd.shard_model(again, mesh, pd.layout_rules())
    tf.train.Checkpoint(model=again).restore(path).assert_consumed()
    for v, e in zip(again.variables, expected):
        np.testing.assert_array_equal(pd.to_numpy(v), e, err_msg=v.path)


def test_checkpoint_keeps_sharded_optimizer_slots(tmp_path):
    mesh = pd.make_mesh(2, 4, device_type="CPU")

    def build(seed):
        keras.utils.set_random_seed(seed)
        mlp = Mlp(8, 32, name="mlp")
        mlp.build((None, 8))
        plan = pd.shard_model(mlp, mesh, pd.layout_rules())
        optimizer = keras.optimizers.AdamW(learning_rate=0.1)
        optimizer.build(mlp.trainable_variables)
        pd.shard_optimizer(optimizer, plan, mesh)
        return mlp, optimizer

    mlp, optimizer = build(0)
    x = pd.shard_batch(np.linspace(-1, 1, 128, dtype=np.float32).reshape(16, 8), mesh)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(mlp(x)))
        grads = tape.gradient(loss, mlp.trainable_variables)
        optimizer.apply_gradients(zip(grads, mlp.trainable_variables))

    step()
    state = lambda m, o: tf.train.Checkpoint(model=m, optimizer=checkpoints.optimizer_state(o))
    path = state(mlp, optimizer).save(os.path.join(tmp_path, "ckpt"))
    other, other_optimizer = build(3)
    state(other, other_optimizer).restore(path).assert_consumed()
    for a, b in zip(other.variables + other_optimizer.variables,
                    mlp.variables + optimizer.variables):
        assert np.abs(pd.to_numpy(b)).max() > 0, b.path  # slots were written by the step
        np.testing.assert_array_equal(pd.to_numpy(a), pd.to_numpy(b), err_msg=b.path)
