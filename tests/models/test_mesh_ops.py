"""The mesh formulations (models/mesh_ops.py) of depthwise convolution, pooling and the patch
embedding equal the native ops, values and gradients (plain TensorFlow on one device: the
formulations only use ops DTensor can expand)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.models import mesh_ops as ops
from float32_bounds import EPS32


def _value_and_grads(fn, *args, weights=tf.sin):
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = fn(*args)
        # A weighted sum, so every output position carries its own gradient.
        loss = tf.reduce_sum(y * weights(tf.reshape(tf.range(tf.size(y), dtype=y.dtype), y.shape)))
    return [y] + tape.gradient(loss, list(args))


def _rounding_bounds(native_fn, terms, *args):
    """Per entry of the value and of each gradient: how far two float32 orders of its sum may
    differ, (terms - 1) * EPS32 * sum|x_i| (tests/float32_bounds.py). A sum of products is
    bilinear, so sum|x_i| is the same op on |args| with |weights|; `terms` is the longest sum
    (taps for a value or an input gradient, batch x positions for a kernel gradient)."""
    magnitudes = _value_and_grads(native_fn, *[tf.abs(a) for a in args],
                                  weights=lambda r: tf.abs(tf.sin(r)))
    return [(terms - 1) * EPS32 * m.numpy() for m in magnitudes]


@pytest.mark.parametrize("size,stride", [(8, 1), (8, 2), (7, 2), (5, 1)])
def test_depthwise_conv_equals_native(size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = tf.constant(rng.normal(size=(2, size, size, 6)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 6, 1)), tf.float32)
    native = _value_and_grads(
        lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, stride, stride, 1], "SAME"), x, kernel)
    shifted = _value_and_grads(
        lambda x, k: ops.shifted_depthwise_conv2d(x, k, stride), x, kernel)
    # Another formulation of the same sums (was rtol=1e-5, atol=1e-5): 9 taps per value and
    # input gradient, 2 x size x size positions per kernel gradient.
    bounds = _rounding_bounds(
        lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, stride, stride, 1], "SAME"),
        2 * size * size, x, kernel)
    for a, b, bound in zip(shifted, native, bounds):
        assert np.all(np.abs(a.numpy() - b.numpy()) <= bound)


@pytest.mark.parametrize("pool,size,stride", [(2, 8, 2), (3, 8, 2), (3, 7, 2), (2, 5, 2)])
def test_pools_equal_native(pool, size, stride):
    # Distinct values: max pooling's gradient is only defined up to ties.
    values = np.random.default_rng(pool * 100 + size).permutation(2 * size * size * 3)
    x = tf.constant(values.reshape(2, size, size, 3) / 7.0, tf.float32)
    for native_fn, shifted_fn in ((tf.nn.avg_pool2d, ops.shifted_avg_pool2d),
                                  (tf.nn.max_pool2d, ops.shifted_max_pool2d)):
        native = _value_and_grads(lambda x: native_fn(x, pool, stride, "SAME"), x)
        shifted = _value_and_grads(lambda x: shifted_fn(x, pool, stride), x)
        for a, b in zip(shifted, native):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=native_fn.__name__)


def test_dispatch_follows_the_context():
    layer = keras.layers.DepthwiseConv2D(3, 2, padding="same", use_bias=False)
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 6, 6, 4)), tf.float32)
    native = layer(x)
    assert not ops.mesh_formulations_enabled()
    with ops.mesh_formulations():
        assert ops.mesh_formulations_enabled()
        np.testing.assert_allclose(ops.depthwise(layer, x).numpy(), native.numpy(), atol=1e-5)
        graph = tf.function(lambda x: ops.max_pool2d(x, 3, 2)).get_concrete_function(x).graph
        assert "MaxPool" not in {op.type for op in graph.get_operations()}
    assert not ops.mesh_formulations_enabled()
    graph = tf.function(lambda x: ops.max_pool2d(x, 3, 2)).get_concrete_function(x).graph
    assert "MaxPool" in {op.type for op in graph.get_operations()}
    with ops.mesh_formulations(), pytest.raises(ValueError, match="depth_multiplier"):
        ops.depthwise(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), x)


@pytest.mark.parametrize("patch,size,channels", [(8, 32, 3), (4, 12, 2), (2, 4, 5)])
def test_patches_matmul_equals_native_conv(patch, size, channels):
    rng = np.random.default_rng(patch * 10 + size)
    x = tf.constant(rng.normal(size=(2, size, size, channels)), tf.float32)
    kernel = tf.constant(rng.normal(size=(patch, patch, channels, 6)), tf.float32)
    native = _value_and_grads(
        lambda x, k: tf.nn.conv2d(x, k, patch, "VALID"), x, kernel)
    matmul = _value_and_grads(ops.patches_matmul, x, kernel)
    # A matmul over flattened patches against the convolution (was rtol=1e-5, atol=1e-4): the
    # longest sum is patch x patch x channels per value, 2 x (size / patch)^2 positions per
    # kernel gradient.
    terms = max(patch * patch * channels, 2 * (size // patch) ** 2)
    bounds = _rounding_bounds(lambda x, k: tf.nn.conv2d(x, k, patch, "VALID"), terms, x, kernel)
    for a, b, bound in zip(matmul, native, bounds):
        assert np.all(np.abs(a.numpy() - b.numpy()) <= bound)


def test_patch_embedding_dispatch_follows_the_context():
    layer = keras.layers.Conv2D(6, 4, 4, padding="valid", name="patch_embedding")
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), tf.float32)
    native = layer(x)
    with ops.mesh_formulations():
        np.testing.assert_allclose(ops.patch_embedding(layer, x).numpy(), native.numpy(),
                                   rtol=1e-5, atol=1e-5)
        graph = tf.function(lambda x: ops.patch_embedding(layer, x)).get_concrete_function(x).graph
        assert "Conv2D" not in {op.type for op in graph.get_operations()}
        overlapping = keras.layers.Conv2D(6, 4, 2, padding="valid", name="stem")
        overlapping.build(x.shape)
        with pytest.raises(ValueError, match="Conv2D stem: .*kernel_size = strides"):
            ops.patch_embedding(overlapping, x)
    graph = tf.function(lambda x: ops.patch_embedding(layer, x)).get_concrete_function(x).graph
    assert "Conv2D" in {op.type for op in graph.get_operations()}
