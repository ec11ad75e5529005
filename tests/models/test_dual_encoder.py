"""DualEncoder contract, stateless replay, remat and XLA on gin/models/tiny.gin."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import from_gin
from basic_tf.parallel.remat import RematPolicy
from float32_bounds import reduction_rtol, tiny_loss_reductions
from models_harness import run_dual_encoder_test, tiny_model, toy_batch

# One forward of models/tiny.gin on toy_batch's 4 examples, to the loss (tests/float32_bounds.py):
# another compile mode (XLA, remat, graph) reorders its reductions, moving a result by up to
# TINY_RTOL of its magnitude (about 4e-4); a gradient comes from the same chain run backwards
# as well: twice that.
TINY_RTOL = reduction_rtol(tiny_loss_reductions(4))

RANDOM = ["coatnet_config.drop_path_rate = 0.3", "coatnet_config.dropout_rate = 0.2",
          "coatnet_config.attention_dropout_rate = 0.1", "text_tower_config.dropout_rate = 0.2",
          "text_tower_config.drop_path_rate = 0.2", "vit_config.dropout_rate = 0.2",
          "vit_config.drop_path_rate = 0.2"]
VIT = ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 8",
       "vit_config.width = 64", "vit_config.depth = 2", "vit_config.num_heads = 2"]


@pytest.mark.parametrize("bindings", [[], VIT + ["vit_config.pooling = 'cls'"],
                                      ["text_tower_config.pooling = 'cls'",
                                       "text_tower_config.causal = True"]],
                         ids=["coatnet", "vit_cls", "text_cls_causal"])
def test_harness(bindings):
    run_dual_encoder_test(tiny_model(bindings))


def _encode(model, images, tokens, seed):
    return (model.encode_image(images, training=True, seed=seed),
            model.encode_text(tokens, training=True, seed=seed))


def test_seed_replays_eager_function_and_xla():
    """Same seed => same masks eager and compiled with XLA (forward and gradients); the
    tf.function (graph) path is covered by the remat test."""
    model = tiny_model(RANDOM)
    images, tokens = toy_batch(model)
    seed = tf.constant([3, 4])
    eager = _encode(model, images, tokens, seed)
    again = _encode(model, images, tokens, seed)
    other = _encode(model, images, tokens, tf.constant([5, 6]))
    inference = (model.encode_image(images), model.encode_text(tokens))
    for i in range(2):
        np.testing.assert_array_equal(eager[i], again[i])
        # The randomness is real: another seed, or inference, differs.
        assert np.abs(other[i] - eager[i]).max() > 1e-3
        assert np.abs(inference[i] - eager[i]).max() > 1e-3
    # seed=None in training draws a fresh seed per call.
    fresh = [model.encode_text(tokens, training=True) for _ in range(2)]
    assert np.abs(fresh[0] - fresh[1]).max() > 1e-3

    def forward_backward(seed):
        with tf.GradientTape() as tape:
            image_emb, text_emb = _encode(model, images, tokens, seed)
            loss = -tf.reduce_sum(image_emb * text_emb) * model.logit_scale
        return image_emb, text_emb, tape.gradient(loss, model.trainable_variables)

    reference = forward_backward(seed)  # eager
    xla_fn = tf.function(forward_backward, jit_compile=True)
    xla, xla_again = xla_fn(seed), xla_fn(seed)
    for i in range(2):
        np.testing.assert_allclose(reference[i], eager[i], atol=1e-6)
        # Unit-norm embeddings (magnitude 1) through the tower's chain under XLA's fusion
        # (was atol=1e-4): the whole loss chain bounds the tower's part.
        np.testing.assert_allclose(xla[i], eager[i], rtol=0, atol=TINY_RTOL)
        np.testing.assert_array_equal(xla_again[i], xla[i])
    dense = lambda gs: [tf.convert_to_tensor(g).numpy() for g in gs]
    eager_grads, xla_grads = dense(reference[2]), dense(xla[2])
    scale = max(np.abs(g).max() for g in eager_grads)
    # Was rtol=1e-3, atol=1e-4 * scale: forward and backward chains, relative to the largest
    # gradient entry (a near-zero entry carries the network's rounding, not its own).
    for a, b in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=2 * TINY_RTOL * scale)


def test_remat_gives_same_gradients(bindings=RANDOM):
    reference = tiny_model(bindings)
    images, tokens = toy_batch(reference)
    seed = tf.constant([1, 2])

    def terms(model):
        image_emb, text_emb = _encode(model, images, tokens, seed)
        return (tf.matmul(image_emb, text_emb, transpose_b=True) * tf.range(4.0)[:, None]
                * model.logit_scale)

    def loss_fn(model):
        return tf.reduce_sum(terms(model))

    grads = {}
    for mode in ("none", "every_block"):
        model = tiny_model(bindings, remat_policy=RematPolicy(mode))
        model.set_weights(reference.get_weights())

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(model)
            return loss, tape.gradient(loss, model.trainable_variables)

        loss, g = step()
        grads[mode] = (loss.numpy(), [tf.convert_to_tensor(x).numpy() for x in g])
    # Graph == eager (same masks), remat == no remat. The loss is a sum of terms of both signs
    # that can nearly cancel (CI once saw |loss| = 0.077 from terms of total magnitude ~36, with
    # graph and eager 6e-5 apart relative to the loss): compare to float32 rounding of the terms,
    # each the end of the model's chain (was atol=1e-6 * magnitude, a constant).
    magnitude = float(tf.reduce_sum(tf.abs(terms(reference))))
    np.testing.assert_allclose(grads["none"][0], loss_fn(reference).numpy(), rtol=0,
                               atol=TINY_RTOL * magnitude)
    np.testing.assert_allclose(grads["none"][0], grads["every_block"][0], rtol=0,
                               atol=TINY_RTOL * magnitude)
    # Recomputation reorders float sums: agree to float32 rounding of the forward and backward
    # chains relative to the largest gradient entry of the model (a near-zero variable's few
    # 1e-6 entries carry the network's rounding). Was rtol=1e-5, atol=1e-5 * max(largest, 1e-3).
    largest = max(float(np.abs(a).max()) for a in grads["none"][1])
    for a, b in zip(grads["none"][1], grads["every_block"][1]):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=0, atol=2 * TINY_RTOL * largest)


def test_remat_recompute_does_not_update_batchnorm_twice():
    model = tiny_model(remat_policy=RematPolicy("every_block"))
    images, tokens = toy_batch(model)
    plain = tiny_model()
    plain.set_weights(model.get_weights())
    for m in (model, plain):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(m.encode_image(images, training=True))
        tape.gradient(loss, m.trainable_variables)
    for a, b in zip(model.non_trainable_variables, plain.non_trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert any(np.abs(v.numpy()).max() > 0 for v in model.non_trainable_variables
               if "moving_mean" in v.path)


def test_logit_scale_and_bias():
    model = tiny_model(["dual_encoder_config.init_temperature = 0.05"])
    assert model.logit_bias is None and len(model.head_trainable_variables) == 1
    np.testing.assert_allclose(model.logit_scale, 20.0, rtol=1e-6)
    np.testing.assert_allclose(model.log_logit_scale.numpy(), math.log(20.0), rtol=1e-6)
    with tf.GradientTape() as tape:
        scale = model.logit_scale
    np.testing.assert_allclose(tape.gradient(scale, model.log_logit_scale), 20.0, rtol=1e-5)
    model.log_logit_scale.assign(math.log(500.0))  # above the cap: clipped, no gradient
    with tf.GradientTape() as tape:
        scale = model.logit_scale
    assert float(scale) == 100.0
    assert float(tape.gradient(scale, model.log_logit_scale) or 0.0) == 0.0

    biased = tiny_model(["dual_encoder_config.use_logit_bias = True",
                         "dual_encoder_config.logit_bias_init = -7.0"])
    assert float(biased.logit_bias) == -7.0 and len(biased.head_trainable_variables) == 2
    run_dual_encoder_test(biased)


def test_frozen_image_tower_and_overrides():
    model = tiny_model(embed_dim=16)
    assert model.embed_dim == 16 and model.image_size == 32 and model.max_text_len == 16
    n_text = len(model.text_trainable_variables)
    model.image_tower.trainable = False  # LiT
    assert model.image_trainable_variables == []
    assert len(model.trainable_variables) == n_text + 1
    with pytest.raises(ValueError, match="unknown overrides.*embed_dimension"):  # from_gin's
        tiny_model(embed_dimension=8)
    with pytest.raises(ValueError, match="pooling='last'"):
        tiny_model(["text_tower_config.pooling = 'last'"])


def test_classifier_weights_transfer_to_dual_encoder(tmp_path):
    """Stage (a) -> (b): the classifier's tower restores into the dual encoder's by path."""
    model = tiny_model()  # parses models/tiny.gin, which gives the classifier its tower too
    classifier = from_gin.model_configs().image_classifier(num_classes=10)
    images, _ = toy_batch(model)
    assert classifier(images).shape == (4, 10)
    path = tf.train.Checkpoint(image_tower=classifier.image_tower).write(str(tmp_path / "a"))
    tf.train.Checkpoint(image_tower=model.image_tower).read(path).expect_partial()
    for v in classifier.image_tower.weights:
        match = [w for w in model.image_tower.weights if w.path == v.path]
        assert len(match) == 1
        np.testing.assert_array_equal(match[0].numpy(), v.numpy())


def test_mixed_bfloat16_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        images, tokens = toy_batch(model)
        with tf.GradientTape() as tape:
            image_emb, text_emb = model({"images": images, "token_ids": tokens}, training=True)
            loss = tf.reduce_sum(image_emb * text_emb) * model.logit_scale
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.image_tower.blocks[-1].compute_dtype == "bfloat16"
    assert image_emb.dtype == text_emb.dtype == model.logit_scale.dtype == tf.float32
    assert {v.dtype for v in model.weights} == {"float32"}
    np.testing.assert_allclose(np.linalg.norm(image_emb, axis=1), 1.0, rtol=1e-5)
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
