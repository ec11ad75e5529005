"""AdaFactorW against a NumPy transcription of its update rule; AdamW's decay exclusions."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config
from basic_tf.training import optimizers


def _numpy_adafactorw(w, grads, lr, beta_1, beta_2, eps, clip, wd, factored):
    """Reference: one dict of slots, update after update (Shazeer & Stern 2018, Alg. 4/5)."""
    w = w.astype(np.float64).copy()
    r = c = v = m = None
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        w = w - lr * wd * w  # decoupled decay first (as Keras applies it)
        g2 = g * g + eps
        if factored:
            r = (beta_2 * r if r is not None else 0) + (1 - beta_2) * g2.mean(axis=-1)
            c = (beta_2 * c if c is not None else 0) + (1 - beta_2) * g2.mean(axis=-2)
            vhat = np.einsum("...i,...j->...ij", r, c) / r.mean(axis=-1)[..., None, None]
        else:
            v = (beta_2 * v if v is not None else 0) + (1 - beta_2) * g2
            vhat = v
        u = g / np.sqrt(vhat / (1 - beta_2 ** t))
        u = u / max(1.0, np.sqrt((u * u).mean()) / clip)
        if beta_1 is not None:
            m = (beta_1 * m if m is not None else 0) + (1 - beta_1) * u
            u = m
        w = w - lr * u
    return w


@pytest.mark.parametrize("shape,beta_1,clip", [((6, 5), 0.9, 1.0), ((2, 4, 3), None, 1.0),
                                               ((7,), 0.9, 0.05), ((3, 1), 0.8, 1.0)])
def test_adafactorw_matches_numpy(shape, beta_1, clip):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=shape).astype(np.float32)
    grads = [rng.normal(size=shape).astype(np.float32) * s for s in (1.0, 3.0, 0.2, 1.0)]
    var = keras.Variable(w0, name="kernel")
    opt = optimizers.AdaFactorW(learning_rate=0.05, beta_1=beta_1, beta_2=0.95,
                                clip_threshold=clip, min_dim_size_to_factor=2, weight_decay=0.1)
    step = tf.function(lambda g: opt.apply([g], [var]))
    for g in grads:
        step(tf.constant(g))
    factored = len(shape) >= 2 and min(shape[-2:]) >= 2
    assert opt._factored(var) == factored
    expected = _numpy_adafactorw(w0, grads, 0.05, beta_1, 0.95, 1e-30, clip, 0.1, factored)
    np.testing.assert_allclose(var.numpy(), expected, rtol=2e-5, atol=2e-6)


def test_adafactorw_factored_state_is_small_and_momentum_dtype():
    var = keras.Variable(np.ones((256, 384), np.float32), name="kernel")
    opt = optimizers.AdaFactorW(momentum_dtype="bfloat16")
    opt.build([var])
    slots = [v for v in opt.variables if v is not opt.iterations and v.shape != ()]
    sizes = sorted(int(np.prod(v.shape)) for v in slots)
    assert sizes == [256, 384, 256 * 384]  # rows, cols, momentum; no full second moment
    assert opt._momentum[0].dtype == "bfloat16"


def test_adafactorw_checkpoint_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [tf.constant(rng.normal(size=(4, 3)).astype(np.float32)) for _ in range(3)]

    def fresh():
        var = keras.Variable(w0, name="kernel")
        opt = optimizers.AdaFactorW(learning_rate=0.1, min_dim_size_to_factor=2)
        opt.build([var])
        return var, opt

    var, opt = fresh()
    for g in grads[:2]:
        opt.apply([g], [var])
    path = tf.train.Checkpoint(var=var, opt=opt).save(str(tmp_path / "ckpt"))
    opt.apply([grads[2]], [var])
    var2, opt2 = fresh()
    tf.train.Checkpoint(var=var2, opt=opt2).restore(path).assert_consumed()
    assert int(opt2.iterations.numpy()) == 2
    opt2.apply([grads[2]], [var2])
    np.testing.assert_array_equal(var2.numpy(), var.numpy())


@pytest.fixture(scope="module")
def tiny_model():
    from basic_tf import from_gin
    config.parse(["models/tiny"])
    return from_gin.dual_encoder()


def test_weight_decay_excludes_norms_biases_and_temperature(tiny_model):
    decayed = {v.path for v in tiny_model.trainable_variables if optimizers.decays(v)}
    for v in tiny_model.trainable_variables:
        name = v.path.split("/")[-1]
        if name in ("kernel", "embeddings", "position_embedding"):
            assert v.path in decayed, v.path
        else:  # gamma, beta, bias, log_logit_scale, relative_bias_table
            assert v.path not in decayed, v.path
    assert any("relative_bias_table" in v.path for v in tiny_model.trainable_variables)


@pytest.mark.parametrize("kind", ["adamw", "adafactorw"])
def test_decoupled_decay_applies_only_to_decayed_variables(tiny_model, kind):
    variables = tiny_model.trainable_variables
    opt = optimizers.make_optimizer(variables, kind=kind, learning_rate=0.5, weight_decay=0.1)
    before = [v.numpy() for v in variables]
    # Zero gradients: the moment-based update is exactly 0, only the decay moves weights.
    opt.apply([tf.zeros(v.shape, v.dtype) for v in variables], variables)
    for v, b in zip(variables, before):
        factor = 1.0 - 0.5 * 0.1 if optimizers.decays(v) else 1.0
        np.testing.assert_allclose(v.numpy(), b * factor, rtol=1e-6, atol=1e-7, err_msg=v.path)
    for v, b in zip(variables, before):
        v.assign(b)


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="kind='sgd'"):
        optimizers.make_optimizer(kind="sgd")
    with pytest.raises(ValueError, match="needs beta_1"):
        optimizers.make_optimizer(kind="adamw", beta_1=None)
