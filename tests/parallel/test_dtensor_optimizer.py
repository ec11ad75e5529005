"""Keras optimizers on sharded variables give the unsharded update, for every mesh and layout.

Optimizers: Keras AdamW and the training room's AdaFactorW. The model is a pre-LN MLP block named like the towers' (norm1, mlp/fc1, mlp/fc2), so the
default rule table gives it a column-parallel fc1 (bias split on "model"), a row-parallel fc2
(bias replicated) and replicated norms; an override replicates fc1's bias, the layout that blew
up before the combiner fix (basic_tf/parallel/dtensor/mesh.py). Data are split on "batch". Reference: the same Keras
optimizer on ordinary variables on one device.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.models.layers import Mlp
from basic_tf.parallel import dtensor as pd
from basic_tf.training.optimizers import AdaFactorW
from float32_bounds import reduction_rtol

STEPS = 4
LEARNING_RATE = 0.05
# The block's loss chain: LayerNorm over 8 features, fc1 over 8 inputs, fc2 over 32 hidden, the
# mean over 16 x 8 outputs. A mesh reorders each (the "model" axis splits fc1's columns and
# fc2's contraction, "batch" splits the mean): 172 EPS32 = 2.1e-5 relative per evaluation.
BLOCK_REDUCTIONS = [8, 8, 32, 16 * 8]
MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.mlp = Mlp(width=8, hidden=32, name="mlp")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x):
        return x + self.mlp(self.norm1(x))


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(16, 8)).astype(np.float32),
            rng.normal(size=(16, 8)).astype(np.float32))


def _block(weights=None):
    keras.utils.set_random_seed(1)
    block = Block(name="block")
    block.build((None, 8))
    if weights is not None:
        block.set_weights(weights)
    return block


OPTIMIZERS = {
    "adamw": lambda: keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=0.1),
    # Factored second moments for both kernels (8x32, 32x8), momentum, decoupled decay.
    "adafactorw": lambda: AdaFactorW(learning_rate=LEARNING_RATE, min_dim_size_to_factor=8,
                                     weight_decay=0.1),
}


def _train(block, optimizer, x, y):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(block(x) - y))
        grads = tape.gradient(loss, block.trainable_variables)
        optimizer.apply_gradients(zip(grads, block.trainable_variables))
        return loss

    return [float(pd.to_numpy(step(x, y))) for _ in range(STEPS)]


@pytest.fixture(scope="module")
def reference():
    x, y = _data()
    init = _block().get_weights()
    out = {}
    for name, make in OPTIMIZERS.items():
        block = _block(init)
        optimizer = make()
        losses = _train(block, optimizer, tf.constant(x), tf.constant(y))
        out[name] = (losses, [v.numpy() for v in block.trainable_variables])
    return init, out


CASES = [(name, m) for name in sorted(OPTIMIZERS) for m in MESHES]


@pytest.mark.parametrize("optimizer_name,mesh_shape", CASES)
def test_sharded_update_equals_unsharded(reference, optimizer_name, mesh_shape):
    init, ref = reference
    mesh = pd.make_mesh(*mesh_shape, device_type="CPU")
    overrides = [("mlp/fc1/bias$", pd.REPLICATED)] if mesh_shape == (2, 4) else []
    block = _block(init)
    plan = pd.shard_model(block, mesh, pd.layout_rules(overrides=overrides))
    specs = {row.path.split("block/")[-1]: row.spec for row in plan}
    model_axis = "model"
    assert specs["mlp/fc1/kernel"] == (None, model_axis)
    assert specs["mlp/fc2/kernel"] == (model_axis, None)
    assert specs["mlp/fc2/bias"] == (None,)
    assert specs["mlp/fc1/bias"] == ((None,) if overrides else (model_axis,))
    optimizer = OPTIMIZERS[optimizer_name]()
    optimizer.build(block.trainable_variables)
    opt_plan = pd.shard_optimizer(optimizer, plan, mesh)
    # Slots of the column-parallel fc1 kernel [8, 32]: moments and momentum are split like it;
    # the factored statistics keep the split of the dimension they keep (columns: [32]).
    kernel_slots = {r.shape: r.spec for r in opt_plan if r.rule == f"slot of {plan[2].path}"}
    assert plan[2].path.endswith("fc1/kernel")
    assert kernel_slots[(8, 32)] == (None, model_axis)
    if optimizer_name == "adafactorw":
        assert kernel_slots[(8,)] == (None,) and kernel_slots[(32,)] == (model_axis,)
    x, y = _data()
    losses = _train(block, optimizer, pd.shard_batch(x, mesh), pd.shard_batch(y, mesh))
    ref_losses, ref_weights = ref[optimizer_name]
    # Was rtol=1e-5 on the losses, rtol=1e-5 + atol=1e-6 on the weights. Loss of step s:
    # s evaluations' rounding (the weights carry s - 1 updates). Weights: each update is the
    # learning rate times a normalised gradient (m / sqrt(v), at most ~1 per element), whose
    # relative rounding is the chain's, so STEPS updates move a weight by at most
    # STEPS * LEARNING_RATE * reduction_rtol (4 * 0.05 * 2.1e-5 = 4.2e-6); the decay multiplies
    # the same numbers on every placement.
    one_step = reduction_rtol(BLOCK_REDUCTIONS)
    for step, (loss, ref_loss) in enumerate(zip(losses, ref_losses), 1):
        assert abs(loss - ref_loss) <= step * one_step * abs(ref_loss), (step, loss, ref_loss)
    for v, expected in zip(block.trainable_variables, ref_weights):
        np.testing.assert_allclose(pd.to_numpy(v), expected, rtol=0,
                                   atol=STEPS * LEARNING_RATE * one_step, err_msg=v.path)
    # The update really moved the weights (a stale-slot update can leave them unchanged).
    assert np.abs(pd.to_numpy(block.trainable_variables[2]) - init[2]).max() > 1e-2
