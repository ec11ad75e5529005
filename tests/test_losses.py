"""Contrastive losses against a NumPy reference, on one device and across 4 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import losses
from float32_bounds import reduction_rtol
from strategies import mirrored_strategy


def _normalised(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def numpy_softmax_loss(img, txt, scale):
    logits = scale * img.astype(np.float64) @ txt.T.astype(np.float64)
    idx = np.arange(len(img))
    i2t = -_log_softmax(logits, 1)[idx, idx].mean()
    t2i = -_log_softmax(logits, 0)[idx, idx].mean()
    return 0.5 * (i2t + t2i)


def numpy_sigmoid_loss(img, txt, scale, bias):
    logits = scale * img.astype(np.float64) @ txt.T.astype(np.float64) + bias
    z = 2 * np.eye(len(img)) - 1
    return np.sum(np.logaddexp(0.0, -z * logits)) / len(img)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return _normalised(rng, 16, 8), _normalised(rng, 16, 8)


def test_softmax_matches_numpy(batch):
    img, txt = batch
    got = losses.contrastive_loss(img, txt, 14.3, kind="softmax")
    np.testing.assert_allclose(got.numpy(), numpy_softmax_loss(img, txt, 14.3), rtol=1e-6)


def test_sigmoid_matches_numpy(batch):
    img, txt = batch
    got = losses.contrastive_loss(img, txt, 10.0, kind="sigmoid", logit_bias=-10.0)
    np.testing.assert_allclose(got.numpy(), numpy_sigmoid_loss(img, txt, 10.0, -10.0), rtol=1e-6)


@pytest.mark.parametrize("kind,bias", [("softmax", None), ("sigmoid", -3.0)])
def test_symmetric_under_swapping_towers(batch, kind, bias):
    img, txt = batch
    a = losses.contrastive_loss(img, txt, 7.0, kind=kind, logit_bias=bias)
    b = losses.contrastive_loss(txt, img, 7.0, kind=kind, logit_bias=bias)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_softmax_with_bias_is_a_clear_error(batch):
    with pytest.raises(ValueError, match="logit_bias"):
        losses.contrastive_loss(*batch, 1.0, kind="softmax", logit_bias=0.5)
    with pytest.raises(ValueError, match="not one of"):
        losses.contrastive_loss(*batch, 1.0, kind="cosine")


@pytest.mark.parametrize("kind,bias", [("softmax", None), ("sigmoid", -2.0)])
@pytest.mark.parametrize("local_loss", [False, True])
def test_replica_shares_sum_to_global_loss_and_gradient(batch, kind, bias, local_loss):
    img, txt = batch
    scale = 5.0
    strategy = mirrored_strategy(4)

    @tf.function
    def run():
        return _replica_shares_graph(strategy, img, txt, scale, kind, bias, local_loss)

    losses_r, d_img_r, d_txt_r, d_scale_r = run()
    # Reference: plain single-device tape over the whole batch.
    i, t, s = tf.constant(img), tf.constant(txt), tf.constant(scale)
    with tf.GradientTape() as tape:
        tape.watch([i, t, s])
        ref = losses.contrastive_loss(i, t, s, kind=kind, logit_bias=bias)
    ref_di, ref_dt, ref_ds = tape.gradient(ref, [i, t, s])
    # 4 replicas against one device reorder the loss's reductions (tests/float32_bounds.py):
    # logits over 8 dimensions, the normaliser and the mean over 16, the sum of the 4 shares:
    # 40 EPS32 relative (was rtol=1e-6). A gradient entry is scale x a sum over 16 of
    # (p - onehot) x a unit vector's entry: magnitude at most 2 * scale, rounded along the
    # logits, the normaliser and that sum (was rtol=1e-5, atol=1e-7); d loss / d scale is a sum
    # of (p - onehot) x logit, magnitude at most 2 (was rtol=1e-5).
    loss_rtol = reduction_rtol([8, 16, 16, 4])
    grad_atol = 2 * scale * reduction_rtol([8, 16, 16])
    np.testing.assert_allclose(sum(x.numpy() for x in losses_r), ref.numpy(), rtol=loss_rtol)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in d_img_r]), ref_di.numpy(),
                               rtol=0, atol=grad_atol)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in d_txt_r]), ref_dt.numpy(),
                               rtol=0, atol=grad_atol)
    np.testing.assert_allclose(sum(x.numpy() for x in d_scale_r), ref_ds.numpy(), rtol=0,
                               atol=2 * reduction_rtol([8, 16, 16, 4]))


def _replica_shares_graph(strategy, img, txt, scale, kind, bias, local_loss):
    num = strategy.num_replicas_in_sync
    local = len(img) // num

    def replica_fn():
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        i = tf.constant(img)[rid * local:(rid + 1) * local]
        t = tf.constant(txt)[rid * local:(rid + 1) * local]
        s = tf.constant(scale, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch([i, t, s])
            loss = losses.contrastive_loss(i, t, s, kind=kind, logit_bias=bias,
                                           local_loss=local_loss)
        return (loss,) + tuple(tape.gradient(loss, [i, t, s]))

    out = strategy.run(replica_fn)
    return [strategy.experimental_local_results(o) for o in out]


def test_in_batch_accuracy():
    img = np.eye(4, dtype=np.float32)
    txt = np.eye(4, dtype=np.float32)[[0, 1, 3, 2]]
    i2t, t2i = losses.in_batch_accuracy(img, txt)
    assert i2t.numpy() == pytest.approx(0.5) and t2i.numpy() == pytest.approx(0.5)
