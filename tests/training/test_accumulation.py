"""BASIC accumulation against a plain single-device GradientTape over the whole batch.

The reference embeds the same micro-batches (same BatchNorm split) with the same stateless seeds
(`micro_batch_seeds`), concatenates them and differentiates the one global loss on one device.
Dropout and stochastic depth are on, so a wrong replay would show.
"""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin, losses
from basic_tf.parallel.remat import RematPolicy
from basic_tf.training.accumulation import compute_contrastive_step, micro_batch_seeds
from basic_tf.training.contrastive import ContrastiveTask, contrastive_gradients
from float32_bounds import reduction_rtol, tiny_loss_reductions

BATCH = 16
# Micro-batches, replicas, recompute and XLA each reorder the reductions of models/tiny.gin's
# loss at batch 16 against the plain tape (tests/float32_bounds.py): the loss may move by
# LOSS_RTOL of itself (8.2e-4; was rtol=1e-5); a gradient runs the chain backwards too, so
# 2 * LOSS_RTOL of the largest gradient entry (was rtol=1e-5, atol=1e-5 * that entry).
LOSS_RTOL = reduction_rtol(tiny_loss_reductions(BATCH))
SEED = tf.constant([7, 11])
# Randomness on in both towers (models/tiny.gin itself has none).
DROPOUT_BINDINGS = ["coatnet_config.dropout_rate = 0.1", "coatnet_config.drop_path_rate = 0.2",
                    "text_tower_config.dropout_rate = 0.1"]


def _model(kind="softmax", remat="none", strategy=None):
    bindings = list(DROPOUT_BINDINGS)
    if kind == "sigmoid":
        bindings += ["dual_encoder_config.use_logit_bias = True",
                     "dual_encoder_config.logit_bias_init = -5.0"]
    config.parse(["models/tiny"], bindings)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = from_gin.dual_encoder(remat_policy=RematPolicy(mode=remat))
    return model


def _batch(model):
    rng = np.random.default_rng(0)
    size = model.image_size
    images = rng.uniform(size=(BATCH, size, size, 3)).astype(np.float32)
    tokens = rng.integers(1, 50, size=(BATCH, model.max_text_len)).astype(np.int32)
    tokens[:, model.max_text_len // 2:] = 0  # padding
    tokens[::3, 3:] = 0
    model({"images": images[:2], "token_ids": tokens[:2]})
    return images, tokens


def _dense(x):
    return tf.convert_to_tensor(x).numpy()


def _reference(model, images, tokens, replicas, micro, kind="softmax"):
    per_replica = BATCH // replicas
    size = per_replica // micro
    with tf.GradientTape() as tape:
        image_embs, text_embs = [], []
        for r in range(replicas):
            for m in range(micro):
                rows = slice(r * per_replica + m * size, r * per_replica + (m + 1) * size)
                image_seed, text_seed = micro_batch_seeds(SEED, r, m)
                image_embs.append(model.encode_image(images[rows], training=True, seed=image_seed))
                text_embs.append(model.encode_text(tokens[rows], training=True, seed=text_seed))
        loss = losses.contrastive_loss(tf.concat(image_embs, 0), tf.concat(text_embs, 0),
                                       model.logit_scale, kind=kind, logit_bias=model.logit_bias)
    return loss.numpy(), [_dense(g) for g in tape.gradient(loss, model.trainable_variables)]


def _accumulated(model, images, tokens, micro, strategy=None, **loss_args):
    if strategy is None:
        loss, grads = tf.function(lambda: contrastive_gradients(
            model, tf.constant(images), tf.constant(tokens), micro, seed=SEED, **loss_args))()
        return loss.numpy(), [_dense(g) for g in grads]
    replicas = strategy.num_replicas_in_sync
    dataset = tf.data.Dataset.from_tensors((images, tokens)).unbatch().batch(BATCH)
    dist = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(inputs):
        out = strategy.run(lambda x: contrastive_gradients(model, x[0], x[1], micro, seed=SEED,
                                                           **loss_args), args=(inputs,))
        return (strategy.reduce("SUM", out[0], axis=None),
                [strategy.reduce("SUM", g, axis=None) for g in out[1]])

    assert replicas > 1
    loss, grads = step(next(iter(dist)))
    return loss.numpy(), [_dense(g) for g in grads]


def _assert_grads_close(got, want, variables):
    scale = max(np.abs(w).max() for w in want)
    for g, w, v in zip(got, want, variables):
        np.testing.assert_allclose(g, w, rtol=0, atol=2 * LOSS_RTOL * scale,
                                   err_msg=getattr(v, "path", v.name))


# Both losses on both paths (M = 1: one taped forward; M = 2: the accumulation's loops); M = 4
# with softmax (the loops are the same for either loss: sigmoid at M = 4 is the chunked file's
# 4-replica case). M = 4 is slow (10 s alone): the fast tier runs the same loops at M = 2, and
# M = 4 on one device in test_accumulation_chunked.py's one-device cases (chunked loss).
@pytest.mark.parametrize("kind,micro", [("softmax", 1), ("softmax", 2),
                                        pytest.param("softmax", 4, marks=pytest.mark.slow),
                                        ("sigmoid", 1), ("sigmoid", 2)])
def test_one_device_equals_plain_tape(kind, micro):
    model = _model(kind)
    images, tokens = _batch(model)
    loss, grads = _accumulated(model, images, tokens, micro, loss_kind=kind)
    ref_loss, ref_grads = _reference(model, images, tokens, 1, micro, kind)
    np.testing.assert_allclose(loss, ref_loss, rtol=LOSS_RTOL)
    _assert_grads_close(grads, ref_grads, model.trainable_variables)


# One case per path (two models traced each, 14 s alone): M = 2 (the accumulation's loops
# recomputing each micro-batch's forward, what training with micro-batches runs) stays in the fast
# tier; M = 1 (one taped forward through the remat blocks) is slow, and the fast tier also
# checks remat under one tape in tests/models/test_dual_encoder.py::test_remat_gives_same_gradients.
@pytest.mark.parametrize("micro", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_recompute_gives_identical_gradients(micro):
    plain = _model("softmax", remat="none")
    images, tokens = _batch(plain)
    remat = _model("softmax", remat="every_block")
    _batch(remat)
    remat.set_weights(plain.get_weights())
    _, want = _accumulated(plain, images, tokens, micro)
    _, got = _accumulated(remat, images, tokens, micro)
    _assert_grads_close(got, want, plain.trainable_variables)


def test_batchnorm_moving_statistics_update_once_per_micro_batch():
    model = _model("softmax")
    images, tokens = _batch(model)
    twin = _model("softmax")
    _batch(twin)
    twin.set_weights(model.get_weights())
    assert model.non_trainable_variables, "models/tiny.gin's image tower should have BatchNorm"
    _accumulated(model, images, tokens, 2)
    # What pass 1 alone does: one training-mode forward per micro-batch.
    for m in range(2):
        rows = slice(m * BATCH // 2, (m + 1) * BATCH // 2)
        image_seed, _ = micro_batch_seeds(SEED, 0, m)
        twin.encode_image(images[rows], training=True, seed=image_seed)
    # The accumulation's graph against eager forwards (was rtol=1e-6, atol=1e-7): the
    # statistics are batch means at the end of a part of the image chain, within LOSS_RTOL of
    # the largest statistic (a mean of normalised activations is rounding noise around 0, so
    # its own magnitude is no scale; the moving variances, ~1, are).
    scale = max(np.abs(v.numpy()).max() for v in twin.non_trainable_variables)
    for got, want in zip(model.non_trainable_variables, twin.non_trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=LOSS_RTOL * scale,
                                   err_msg=got.path)


# Slow: 40-45 s of XLA compilation (remat on); the fast tier compiles the chunked accumulation
# under XLA (test_accumulation_chunked.py).
@pytest.mark.slow
def test_compiles_with_xla_and_matches():
    """jit_compile=True on CPU is the project's proxy for 'runs on TPU'."""
    model = _model("softmax", remat="every_block")
    images, tokens = _batch(model)
    step = tf.function(lambda i, t: contrastive_gradients(model, i, t, 2, seed=SEED),
                       jit_compile=True)
    loss, grads = step(tf.constant(images), tf.constant(tokens))
    want_loss, want = _accumulated(model, images, tokens, 2)
    np.testing.assert_allclose(loss.numpy(), want_loss, rtol=LOSS_RTOL)
    _assert_grads_close([_dense(g) for g in grads], want, model.trainable_variables)


def _frozen_image_reference(model, images, tokens, loss_fn, variables):
    """Plain full-batch tape, M = 2 on one device, the image tower in inference mode."""
    half = BATCH // 2
    with tf.GradientTape() as tape:
        image_emb = model.encode_image(images)
        text_emb = tf.concat([model.encode_text(tokens[m * half:(m + 1) * half], training=True,
                                                seed=micro_batch_seeds(SEED, 0, m)[1])
                              for m in (0, 1)], 0)
        loss = loss_fn(image_emb, text_emb)
    return loss.numpy(), [_dense(g) for g in tape.gradient(loss, variables)]


def test_custom_loss_and_frozen_tower_need_no_edit_of_the_accumulation():
    """GradCache-style hooks: a loss the accumulation has never seen (a scaled cosine
    regression with its own variable) and a frozen image tower (inference mode, no variable
    group). Gradients equal a plain full-batch tape; the frozen tower's variables get none."""
    model = _model("softmax")
    images, tokens = _batch(model)
    weight = tf.Variable(1.5)

    def loss_fn(image_emb, text_emb):  # mean (w * cos - 1)^2 over the pairs
        return tf.reduce_mean((weight * tf.reduce_sum(image_emb * text_emb, 1) - 1.0) ** 2)

    text_vars = list(model.text_trainable_variables)
    step = tf.function(lambda: compute_contrastive_step(
        lambda x, seed: model.encode_image(x, training=False),
        lambda t, seed: model.encode_text(t, training=True, seed=seed),
        loss_fn, tf.constant(images), tf.constant(tokens),
        image_variables=[], text_variables=text_vars, head_variables=[weight],
        embed_dim=model.embed_dim, num_micro_batches=2, seed=SEED))()
    assert len(step.grads) == len(text_vars) + 1  # nothing for the frozen tower
    want_loss, want = _frozen_image_reference(model, images, tokens, loss_fn,
                                              text_vars + [weight])
    np.testing.assert_allclose(step.loss.numpy(), want_loss, rtol=LOSS_RTOL)
    _assert_grads_close([_dense(g) for g in step.grads], want, text_vars + [weight])


def test_locked_image_tower_trains_only_its_projection_and_text_grads_stay_exact():
    """LiT through the task: the locked tower runs in inference mode; only the projection of
    the image side trains, and the other gradients equal a plain tape's."""
    model = _model("softmax")
    images, tokens = _batch(model)
    task = ContrastiveTask(model, num_micro_batches=2, lock_image_tower=True)
    projection = {id(v) for v in model.image_tower.projection.trainable_variables}
    image_side = [v for v in task.trainable_variables
                  if any(v is w for w in model.image_tower.variables)]
    assert image_side and {id(v) for v in image_side} == projection
    step = tf.function(lambda: task.gradients(tf.constant(images), tf.constant(tokens), SEED))()
    want_loss, want = _frozen_image_reference(
        model, images, tokens, lambda i, t: losses.contrastive_loss(i, t, model.logit_scale),
        task.trainable_variables)
    np.testing.assert_allclose(step.loss.numpy(), want_loss, rtol=LOSS_RTOL)
    _assert_grads_close([_dense(g) for g in step.grads], want, task.trainable_variables)


def test_indivisible_batch_is_a_clear_error():
    model = _model("softmax")
    images, tokens = _batch(model)
    with pytest.raises(ValueError, match="num_micro_batches=3"):
        contrastive_gradients(model, tf.constant(images), tf.constant(tokens), 3, seed=SEED)
