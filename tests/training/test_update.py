"""apply_update under MirroredStrategy (4 virtual CPUs) against one device and a NumPy AdamW."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.training import optimizers
from basic_tf.training.update import apply_update
from float32_bounds import reduction_rtol
from strategies import mirrored_strategy

X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
Y = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
W0 = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
B0 = np.zeros(3, np.float32)
# The reductions of one step: the prediction over 5 inputs, the gradient's sum over the 16 rows
# (4 replicas x 4 rows plus the all-reduce, or 16 rows on one device), the global norm over the
# 18 gradient elements (clipping).
STEP_REDUCTIONS = [5, 16, 18]


def _numpy_run(lr, clip, wd, steps, poison_steps=()):
    """Full-batch MSE/2, clip by global norm, AdamW (Keras' epsilon placement); skipped steps
    change nothing."""
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    t, losses = 0, []
    for step in range(steps):
        err = X @ w + b - Y
        loss = 0.5 * np.mean(np.sum(err ** 2, axis=1))
        gw, gb = X.T @ err / len(X), err.mean(axis=0)
        if step in poison_steps:
            losses.append(np.nan)
            continue
        losses.append(loss)
        norm = np.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2))
        scale = clip / max(norm, clip) if clip else 1.0
        t += 1
        params = [w, b]
        for k, g in enumerate((gw * scale, gb * scale)):
            if k == 0:
                params[k] = params[k] - lr * wd * params[k]  # bias excluded from decay
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            alpha = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            params[k] = params[k] - alpha * m[k] / (np.sqrt(v[k]) + 1e-7)
        w, b = params
    return w, b, losses


def _tf_run(strategy, lr, clip, wd, steps, poison_steps=(), kind="adamw", flat=False):
    with strategy.scope():
        w = keras.Variable(W0, name="kernel")
        b = keras.Variable(B0, name="bias")
        extra = {"epsilon": 1e-7} if kind == "adamw" else {"min_dim_size_to_factor": 2}
        opt = optimizers.make_optimizer([w, b], kind=kind, learning_rate=lr,
                                        weight_decay=wd, **extra)
    n = strategy.num_replicas_in_sync
    per = len(X) // n
    xs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(X[ctx.replica_id_in_sync_group * per:][:per]))
    ys = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(Y[ctx.replica_id_in_sync_group * per:][:per]))

    def replica_step(x, y, poison):
        with tf.GradientTape() as tape:
            err = tf.matmul(x, w) + b - y
            share = 0.5 * tf.reduce_sum(tf.square(err)) / len(X)  # share of the global mean
        grads = tape.gradient(share, [w, b])
        grads[0] = tf.where(poison, grads[0] * np.nan, grads[0])
        return apply_update(opt, [w, b], share, grads, clip_norm=clip, flat_check=flat)

    @tf.function
    def step(poison):
        out = strategy.run(replica_step, args=(xs, ys, poison))
        return [strategy.experimental_local_results(t)[0] for t in out]

    losses, applied = [], []
    for s in range(steps):
        loss, _, ok, _ = step(tf.constant(s in poison_steps))
        losses.append(float(loss) if bool(ok) else np.nan)
        applied.append(bool(ok))
    return w.numpy(), b.numpy(), losses, int(opt.iterations.numpy()), applied


@pytest.mark.parametrize("clip", [None, 0.5])
def test_mirrored_update_matches_numpy_and_one_device(clip):
    mirrored = mirrored_strategy(4)
    wm, bm, lm, _, _ = _tf_run(mirrored, 0.05, clip, 0.1, 4)
    w1, b1, l1, _, _ = _tf_run(tf.distribute.get_strategy(), 0.05, clip, 0.1, 4)
    wn, bn, ln = _numpy_run(0.05, clip, 0.1, 4)
    np.testing.assert_allclose(lm, ln, rtol=1e-5)
    np.testing.assert_allclose(wm, wn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bm, bn, rtol=1e-4, atol=1e-6)
    # 4 replicas against one device (was rtol=1e-5, atol=1e-7): the gradients differ by the
    # float32 rounding of STEP_REDUCTIONS in another order (tests/float32_bounds.py); an AdamW
    # update is the learning rate times m / sqrt(v) (at most ~1), carrying that relative
    # rounding, so 4 updates move a weight by at most 4 * 0.05 * reduction_rtol (8.6e-7).
    np.testing.assert_allclose(wm, w1, rtol=0, atol=4 * 0.05 * reduction_rtol(STEP_REDUCTIONS))
    if clip:  # clipping is active: the unclipped run ends elsewhere
        assert not np.allclose(wm, _numpy_run(0.05, None, 0.1, 4)[0], atol=1e-4)


def test_non_finite_step_changes_nothing():
    mirrored = mirrored_strategy(4)
    w, b, losses, iterations, applied = _tf_run(mirrored, 0.05, 1.0, 0.1, 5, poison_steps={1, 2})
    wn, bn, ln = _numpy_run(0.05, 1.0, 0.1, 5, poison_steps={1, 2})
    assert applied == [True, False, False, True, True]
    assert iterations == 3  # the schedule only advances on applied updates
    np.testing.assert_allclose(w, wn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([l for l in losses if l == l], [l for l in ln if l == l], rtol=1e-5)


def test_mirrored_adafactorw_matches_keras_own_apply_on_one_device():
    """The production default (AdaFactorW, decoupled decay, clipping) through apply_update on 4
    replicas against Keras' own optimizer.apply on the full-batch gradient, clipped by hand."""
    lr, clip, wd = 0.05, 0.5, 0.1
    mirrored = mirrored_strategy(4)
    wm, bm, _, iterations, _ = _tf_run(mirrored, lr, clip, wd, 3, kind="adafactorw")
    w = keras.Variable(W0, name="kernel")
    b = keras.Variable(B0, name="bias")
    opt = optimizers.make_optimizer([w, b], kind="adafactorw", learning_rate=lr,
                                    weight_decay=wd, min_dim_size_to_factor=2)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(tf.matmul(X, w) + b - Y), 1))
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, [w, b]), clip)
        opt.apply(grads, [w, b])
    assert iterations == 3 and opt._factored(w)
    np.testing.assert_allclose(wm, w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bm, b.numpy(), rtol=1e-5, atol=1e-6)


def _one_variable_step(optimizer_fn, grad_value, max_loss=None, loss_value=1.0, flat=False):
    """One apply_update of a constant gradient on a [4] variable under 4 replicas; -> (result,
    weights after, slots after, update count)."""
    mirrored = mirrored_strategy(4)
    with mirrored.scope():
        w = keras.Variable(np.ones(4, np.float32), name="kernel")
        opt = optimizer_fn()
        opt.build([w])

    @tf.function
    def step():
        def replica():
            grads = [tf.fill([4], tf.constant(grad_value / 4, tf.float32))]
            return apply_update(opt, [w], tf.constant(loss_value / 4), grads, None, max_loss,
                                flat_check=flat)
        out = mirrored.run(replica)
        return [mirrored.experimental_local_results(t)[0] for t in out]

    loss, _, applied, loss_finite = step()
    slots = [v.numpy() for v in opt.variables if v is not opt.iterations and "learning_rate"
             not in v.path]
    return (bool(applied), bool(loss_finite)), w.numpy(), slots, int(opt.iterations.numpy())


def test_update_that_overflows_the_weights_is_rolled_back():
    # A finite loss and gradient, but lr x grad overflows float32: before the fix the weights
    # became inf and stayed so (the loss was finite, so nothing was skipped).
    (applied, loss_finite), w, slots, iterations = _one_variable_step(
        lambda: keras.optimizers.SGD(learning_rate=1e30, momentum=0.9), grad_value=1e10)
    assert (applied, loss_finite) == (False, True)
    np.testing.assert_array_equal(w, np.ones(4))
    for slot in slots:
        np.testing.assert_array_equal(slot, np.zeros_like(slot))
    assert iterations == 0


@pytest.mark.parametrize("replicas", [1, 4])
def test_flat_adamw_update_matches_the_per_variable_one(replicas):
    """flat_update (XLA's path: one concatenated AdamW update, decay on the kernel only, a
    select instead of the roll-back) against update.py's per-variable path, skipped steps
    included."""
    strategy = mirrored_strategy(4) if replicas > 1 else tf.distribute.get_strategy()
    args = (0.05, 0.5, 0.1, 5)
    per_variable = _tf_run(strategy, *args, poison_steps={2})
    flat = _tf_run(strategy, *args, poison_steps={2}, flat=True)
    assert flat[3:] == per_variable[3:] == (4, [True, True, False, True, True])
    # Only the global norm sums in another order: a relative rounding per step, carried by
    # updates of at most the learning rate (as in test_mirrored_update_matches_numpy...).
    for a, b in zip(flat[:2], per_variable[:2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=4 * 0.05 * reduction_rtol(STEP_REDUCTIONS))
    np.testing.assert_allclose(flat[2], per_variable[2], rtol=1e-6)


def test_flat_adamw_update_that_overflows_the_weights_changes_nothing():
    # An infinite learning rate: the flat update is computed, found non-finite and not written.
    (applied, loss_finite), w, slots, iterations = _one_variable_step(
        lambda: keras.optimizers.AdamW(learning_rate=1e39, weight_decay=0.0), grad_value=1.0,
        flat=True)
    assert (applied, loss_finite, iterations) == (False, True, 0)
    np.testing.assert_array_equal(w, np.ones(4))
    for slot in slots:
        np.testing.assert_array_equal(slot, np.zeros_like(slot))


def test_loss_above_the_ceiling_is_not_applied():
    sgd = lambda: keras.optimizers.SGD(learning_rate=0.1)
    (applied, loss_finite), w, _, iterations = _one_variable_step(
        sgd, grad_value=1.0, max_loss=tf.constant(0.5), loss_value=1.0)
    assert (applied, loss_finite, iterations) == (False, True, 0)
    np.testing.assert_array_equal(w, np.ones(4))
    (applied, _), w, _, iterations = _one_variable_step(
        sgd, grad_value=1.0, max_loss=tf.constant(2.0), loss_value=1.0)
    assert applied and iterations == 1
    np.testing.assert_allclose(w, np.full(4, 0.9), rtol=1e-6)


@pytest.mark.parametrize("flat", [False, True])
def test_all_finite_finds_one_bad_element_in_any_dtype(flat):
    from basic_tf.training.update import all_finite
    good = [tf.ones([3, 2]), tf.zeros([4], tf.bfloat16), tf.ones([])]
    assert bool(all_finite(good, flat))
    for i, bad in enumerate([np.inf, np.nan]):
        tensors = list(good)
        spoilt = np.zeros([4], np.float32)
        spoilt[i] = bad
        tensors[1] = tf.constant(spoilt, tf.bfloat16)
        assert not bool(all_finite(tensors, flat))
