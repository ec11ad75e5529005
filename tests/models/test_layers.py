"""Shared layers against NumPy: stateless dropout, BatchNorm and its freeze context, attention."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models.coatnet import relative_position_index
from strategies import mirrored_strategy


def test_dropout_and_stochastic_depth_are_stateless():
    x = tf.ones([64, 256])
    seed = tf.constant([1, 2])
    drop = L.Dropout(0.25)
    y = drop(x, seed, training=True).numpy()
    # Kept entries are rescaled by 1 / (1 - rate); about `rate` of them are dropped.
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(drop(x, seed, training=True), y)
    np.testing.assert_array_equal(tf.function(lambda s: drop(x, s, training=True))(seed), y)
    np.testing.assert_array_equal(
        tf.function(lambda s: drop(x, s, training=True), jit_compile=True)(seed), y)
    assert (drop(x, tf.constant([1, 3]), training=True).numpy() != y).mean() > 0.2
    np.testing.assert_array_equal(drop(x, seed, training=False), x)

    path = L.StochasticDepth(0.5)(tf.ones([400, 3, 5]), seed, training=True).numpy()
    per_example = path.reshape(400, -1)
    assert np.all(per_example == per_example[:, :1])  # whole example kept or dropped
    assert set(np.unique(per_example)) == {0.0, 2.0}
    assert abs((per_example[:, 0] == 0).mean() - 0.5) < 0.08


def _numpy_batch_norm(x, gamma, beta, eps):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


def test_batch_norm_and_no_moving_stat_updates():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 3, 5)) * 2 + 1).astype(np.float32)
    bn = L.BatchNorm(momentum=0.9, epsilon=1e-3)
    bn.build(x.shape)
    bn.gamma.assign(rng.normal(size=5).astype(np.float32))
    bn.beta.assign(rng.normal(size=5).astype(np.float32))
    expected, mean, var = _numpy_batch_norm(x, bn.gamma.numpy(), bn.beta.numpy(), 1e-3)

    step = tf.function(lambda t: bn(t, training=True))
    with L.no_moving_stat_updates():
        frozen_out = bn(x, training=True).numpy()
        frozen_graph = tf.function(lambda t: bn(t, training=True))(x).numpy()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(5))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(5))
    out = step(x).numpy()  # traced outside the context: updates
    for y in (frozen_out, frozen_graph, out):
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    # Inference uses the moving statistics.
    inference = bn(x, training=False).numpy()
    np.testing.assert_allclose(
        inference, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-3) * bn.gamma.numpy()
        + bn.beta.numpy(), rtol=1e-4, atol=1e-4)


def test_batch_norm_per_replica_under_mirrored_strategy():
    """Each replica normalises over its own half; moving stats become the replicas' mean."""
    strategy = mirrored_strategy(2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 2, 2, 3)).astype(np.float32)
    x[4:] = x[4:] * 3 + 5  # the two replicas' halves have different statistics
    with strategy.scope():
        bn = L.BatchNorm(momentum=0.5)
        bn.build(x.shape)
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(8))

    @tf.function
    def step(batch):
        return strategy.run(lambda t: bn(t, training=True), args=(batch,))

    out = step(next(iter(dist)))
    halves = [_numpy_batch_norm(x[:4], 1.0, 0.0, 1e-3), _numpy_batch_norm(x[4:], 1.0, 0.0, 1e-3)]
    for replica, (expected, _, _) in zip(strategy.experimental_local_results(out), halves):
        np.testing.assert_allclose(replica.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * (halves[0][1] + halves[1][1]) / 2,
                               rtol=1e-5, atol=1e-6)


def test_attention_matches_numpy_with_bias():
    rng = np.random.default_rng(2)
    b, n, c, heads = 2, 5, 8, 2
    x = rng.normal(size=(b, n, c)).astype(np.float32)
    bias = np.where(rng.uniform(size=(b, 1, n, n)) < 0.3, L.NEG_INF, 0.0).astype(np.float32)
    attention = L.MultiHeadAttention(c, heads)
    attention.build(x.shape)
    got = attention(x, tf.zeros([2], tf.int32), bias).numpy()

    wq, bq = attention.qkv.kernel.numpy(), attention.qkv.bias.numpy()
    wo, bo = attention.out.kernel.numpy(), attention.out.bias.numpy()
    qkv = (x @ wq + bq).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c // heads) + bias
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, c) @ wo + bo
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (4, 4)])
def test_relative_position_index(height, width):
    index = relative_position_index(height, width)
    size = (2 * height - 1) * (2 * width - 1)
    assert index.shape == (height * width,) * 2 and index.min() >= 0 and index.max() < size
    rows, cols = np.divmod(np.arange(height * width), width)
    offsets = np.stack([rows[:, None] - rows[None], cols[:, None] - cols[None]], -1).reshape(-1, 2)
    flat = index.reshape(-1)
    # Same 2-D offset <=> same table entry; every table entry is used.
    same_offset = np.all(offsets[:, None] == offsets[None], -1)
    np.testing.assert_array_equal(same_offset, flat[:, None] == flat[None])
    assert len(np.unique(flat)) == size
