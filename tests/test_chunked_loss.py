"""The chunked loss (loss_chunk = C) against the unchunked loss's plain full-batch tape on one
device: loss and gradients w.r.t. both embeddings, the scale and the sigmoid bias, on one device,
across 4 replicas (global and local), under XLA; C not dividing N is an error.

Tolerance: float32 rounding of the work compared, not a constant that happened to hold. With
u = 2^-24 (float32 unit round-off) a k-term float32 sum is off by at most ~k u of its terms'
magnitudes (Higham's gamma_k). A logit is a D-term dot product of unit vectors times the scale
(error ~ D u scale), a log-sum-exp or a gradient element sums N terms (N u), and the mean over
rows N more; an error dz in a logit moves exp(z - lse) by the relative amount dz. So either
computation's relative error is at most u (scale (D + N) + 2 N), and two computations compared
may differ by twice that: `tolerance(n, d, scale)`. A wrong block, row offset or missing term
moves the result by O(1 / N) relative or more, far above it (N = 32: 3e-2 against ~1e-4).
"""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import losses
from strategies import mirrored_strategy
from test_losses import _normalised, numpy_sigmoid_loss, numpy_softmax_loss

N, D, SCALE, BIAS = 32, 16, 5.0, -2.0
U = 2.0 ** -24  # float32 unit round-off


def tolerance(n: int, d: int, scale: float) -> float:
    """Relative difference two float32 computations of the loss or its gradients may show."""
    return 2 * U * (scale * (d + n) + 2 * n)


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    return _normalised(rng, N, D), _normalised(rng, N, D)


def _loss_and_grads(img, txt, kind, chunk, local_loss=False):
    """(loss, [d img, d txt, d scale(, d bias)]) by a plain tape on one device."""
    i, t = tf.constant(img), tf.constant(txt)
    s, b = tf.constant(SCALE), tf.constant(BIAS)
    bias = b if kind == "sigmoid" else None
    watched = [i, t, s] + ([b] if bias is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        loss = losses.contrastive_loss(i, t, s, kind=kind, logit_bias=bias, chunk=chunk,
                                       local_loss=local_loss)
    return loss.numpy(), [g.numpy() for g in tape.gradient(loss, watched)]


def _assert_close(got, want, tol):
    """Each array within tol of the largest magnitude of its reference (gradients' small
    elements carry the absolute error of the sums they come from)."""
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("chunk", [1, 8, N])
def test_one_device_equals_unchunked_tape(batch, kind, chunk):
    img, txt = batch
    loss, grads = _loss_and_grads(img, txt, kind, chunk)
    ref_loss, ref_grads = _loss_and_grads(img, txt, kind, 0)
    tol = tolerance(N, D, SCALE)
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    _assert_close(grads, ref_grads, tol)
    exact = (numpy_softmax_loss(img, txt, SCALE) if kind == "softmax"
             else numpy_sigmoid_loss(img, txt, SCALE, BIAS))
    np.testing.assert_allclose(loss, exact, rtol=tol / 2)  # float64 truth: one computation


def test_a_wrong_block_would_fail_the_tolerance(batch):
    """The tolerance can fail: dropping one of 4 column blocks' pairs (a wrong offset) moves
    the loss far beyond it."""
    img, txt = batch
    moved = txt.copy()
    moved[:8] = np.roll(txt[:8], 1, axis=0)  # 8 pairs of the first block mismatched
    a, _ = _loss_and_grads(img, txt, "softmax", 8)
    b, _ = _loss_and_grads(img, moved, "softmax", 8)
    assert abs(a - b) > 100 * tolerance(N, D, SCALE) * abs(a)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("local_loss", [False, True])
def test_four_replicas_sum_to_unchunked_tape(batch, kind, local_loss):
    img, txt = batch
    strategy = mirrored_strategy(4)
    local = N // 4

    @tf.function
    def run():
        def replica_fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            i = tf.constant(img)[rid * local:(rid + 1) * local]
            t = tf.constant(txt)[rid * local:(rid + 1) * local]
            s, b = tf.constant(SCALE), tf.constant(BIAS)
            bias = b if kind == "sigmoid" else None
            watched = [i, t, s] + ([b] if bias is not None else [])
            with tf.GradientTape() as tape:
                tape.watch(watched)
                loss = losses.contrastive_loss(i, t, s, kind=kind, logit_bias=bias, chunk=4,
                                               local_loss=local_loss)
            return (loss,) + tuple(tape.gradient(loss, watched))
        return [strategy.experimental_local_results(o) for o in strategy.run(replica_fn)]

    out = run()
    loss = sum(x.numpy() for x in out[0])
    grads = [np.concatenate([x.numpy() for x in out[1]]),
             np.concatenate([x.numpy() for x in out[2]])]
    grads += [sum(x.numpy() for x in g) for g in out[3:]]  # scale (and bias): summed shares
    ref_loss, ref_grads = _loss_and_grads(img, txt, kind, 0)
    tol = tolerance(N, D, SCALE)
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    _assert_close(grads, ref_grads, tol)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_compiles_with_xla_and_matches(batch, kind):
    img, txt = batch
    bias = tf.constant(BIAS) if kind == "sigmoid" else None

    @tf.function(jit_compile=True)
    def step(i, t, s):
        with tf.GradientTape() as tape:
            tape.watch([i, t, s])
            loss = losses.contrastive_loss(i, t, s, kind=kind, logit_bias=bias, chunk=8)
        return loss, tape.gradient(loss, [i, t, s])

    loss, grads = step(tf.constant(img), tf.constant(txt), tf.constant(SCALE))
    ref_loss, ref_grads = _loss_and_grads(img, txt, kind, 0)
    tol = tolerance(N, D, SCALE)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=tol)
    _assert_close([g.numpy() for g in grads], ref_grads[:3], tol)


@pytest.mark.parametrize("chunk,message", [(5, "loss_chunk=5 does not divide the global batch "
                                                "of 32"),
                                           (-1, "loss_chunk=-1 must be an integer"),
                                           (2.0, "loss_chunk=2.0 must be an integer")])
def test_bad_chunk_is_a_named_error(batch, chunk, message):
    with pytest.raises(ValueError, match=message):
        losses.contrastive_loss(*batch, SCALE, chunk=chunk)


@pytest.mark.parametrize("chunk", [1, 8, N])
def test_in_batch_accuracy_in_blocks_equals_the_whole_matrix(batch, chunk):
    """Half the pairs matched, the rest random, and an exact tie (a repeated text): the same
    fractions as the [N, N] similarities give."""
    img, txt = batch
    txt = txt.copy()
    txt[:N // 2] = img[:N // 2]
    txt[N - 1] = txt[N - 2]
    want = [a.numpy() for a in losses.in_batch_accuracy(img, txt)]
    got = [a.numpy() for a in losses.in_batch_accuracy(img, txt, chunk=chunk)]
    assert got == want and all(0.5 <= w < 1 for w in want), (got, want)
