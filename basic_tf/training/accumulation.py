"""BASIC's exact contrastive gradient accumulation.

A contrastive loss couples every pair of the batch, so naive accumulation (sum of micro-batch
losses) changes the loss: each micro-batch would only see its own negatives. BASIC (Pham et al.,
Sec. 4; the same family as GradCache) keeps the global-batch loss exact:

  1. embed every micro-batch with no tape (activations are freed after each micro-batch);
  2. gather the embeddings across replicas, compute the loss and d loss / d embeddings once for the
     whole batch (the temperature's and bias's gradients are finished here);
  3. re-run each micro-batch under a tape and back-propagate the cached embedding gradients
     (`tape.gradient(emb, vars, output_gradients=d_emb)`), summing parameter gradients.

Memory scales with the micro-batch plus the N x D embeddings, never with N x activations. The
micro-batch loops are `tf.while_loop`s with `parallel_iterations=1`, so the graph executor cannot
run several micro-batches at once (which would hold all their activations).

Exactness conditions, all handled here:
- Dropout / stochastic depth replay: both passes call the towers with the same stateless seed per
  (call seed, replica, micro-batch, tower): see `micro_batch_seeds`.
- BatchNorm: both passes see the same micro-batch split (so the same batch statistics); moving
  averages are updated in pass 1 only (pass 2 runs under `no_moving_stat_updates()`).

With one micro-batch the two passes collapse into one taped forward (no recomputation).
"""
import collections
from typing import Optional

import gin
import tensorflow as tf

from basic_tf import losses
from basic_tf.models.layers import fold_seed, no_moving_stat_updates

ContrastiveStep = collections.namedtuple(
    "ContrastiveStep", ["loss", "grads", "image_emb", "text_emb"])
ContrastiveStep.__doc__ = """Result of one contrastive gradient computation on this replica.

loss: float32 scalar, this replica's share of the global-batch loss.
grads: list aligned with model.trainable_variables (zeros where a variable is unconnected).
image_emb, text_emb: float32 [n, D] this replica's embeddings (for metrics).
"""

_IMAGE_TOWER, _TEXT_TOWER = 0, 1


def micro_batch_seeds(seed: tf.Tensor, replica_id, micro_batch_index) -> tuple[tf.Tensor, tf.Tensor]:
    """Stateless seeds (image tower, text tower), int32 [2] each, for one micro-batch.

    Public so that a reference computation (tests, debugging) can replay the exact randomness.
    Folds with `fold_seed` (Philox), whose numbers are the same eager, in graphs and under XLA;
    the default algorithm picks another generator under XLA, so a compiled step would drop other
    units than an uncompiled one.
    """
    per_replica = fold_seed(tf.cast(seed, tf.int32), tf.cast(replica_id, tf.int32))
    per_micro = fold_seed(per_replica, tf.cast(micro_batch_index, tf.int32))
    return fold_seed(per_micro, _IMAGE_TOWER), fold_seed(per_micro, _TEXT_TOWER)


def _replica_id() -> tf.Tensor:
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("contrastive_gradients must run in a replica context (call it inside "
                           "strategy.run, or outside any strategy), not in cross-replica context")
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def _split(x: tf.Tensor, num_micro_batches: int) -> tf.Tensor:
    """[n, ...] -> [M, n/M, ...]: contiguous equal slices, in order."""
    n = x.shape[0]
    if n is None:
        raise ValueError("contrastive_gradients needs a static batch size (batch with "
                         "drop_remainder=True); got a batch of unknown size")
    if n % num_micro_batches:
        raise ValueError(f"batch of {n} examples cannot be split into num_micro_batches="
                         f"{num_micro_batches} equal micro-batches")
    return tf.reshape(x, tf.concat([[num_micro_batches, n // num_micro_batches],
                                    tf.shape(x)[1:]], axis=0))


def _loss_and_embedding_grads(model, image_emb, text_emb, loss_kwargs):
    """Global loss share and its gradients w.r.t. this replica's embeddings and the head vars."""
    head_vars = list(model.head_trainable_variables)
    with tf.GradientTape() as tape:
        tape.watch([image_emb, text_emb])
        loss = losses.contrastive_loss(image_emb, text_emb, model.logit_scale,
                                       logit_bias=model.logit_bias, **loss_kwargs)
    d_image, d_text, *head_grads = tape.gradient(loss, [image_emb, text_emb] + head_vars)
    # The gradient of all_gather loses static shapes; the embeddings' shapes are known.
    return (loss, tf.ensure_shape(d_image, image_emb.shape), tf.ensure_shape(d_text, text_emb.shape),
            head_grads)


def _taped_single_pass(model, images, token_ids, seeds, loss_kwargs):
    """M = 1: one forward under a tape, gradients straight from the loss."""
    image_seed, text_seed = seeds
    with tf.GradientTape() as tape:
        image_emb = model.encode_image(images, training=True, seed=image_seed)
        text_emb = model.encode_text(token_ids, training=True, seed=text_seed)
        loss = losses.contrastive_loss(image_emb, text_emb, model.logit_scale,
                                       logit_bias=model.logit_bias, **loss_kwargs)
    variables = list(model.trainable_variables)
    grads = tape.gradient(loss, variables)
    return loss, grads, image_emb, text_emb


def _embed_without_tape(model, images_mb, tokens_mb, seed, replica_id):
    """Pass 1: [M, m, ...] inputs -> ([M*m, D], [M*m, D]) embeddings, one micro-batch at a time.

    The embeddings are a float32 [M, m, D] loop variable written in place
    (tensor_scatter_nd_update), not a TensorArray: XLA compiles both, and DTensor (model
    parallelism, basic_tf.parallel.dtensor) has no layout propagation for TensorList ops.
    """
    num_micro, micro = images_mb.shape[0], images_mb.shape[1]

    def body(i, image_acc, text_acc):
        image_seed, text_seed = micro_batch_seeds(seed, replica_id, i)
        image_emb = model.encode_image(images_mb[i], training=True, seed=image_seed)
        text_emb = model.encode_text(tokens_mb[i], training=True, seed=text_seed)
        write = lambda acc, emb: tf.tensor_scatter_nd_update(
            acc, [[i]], tf.expand_dims(tf.cast(emb, tf.float32), 0))
        return i + 1, write(image_acc, image_emb), write(text_acc, text_emb)

    zeros = tf.zeros([num_micro, micro, model.embed_dim], tf.float32)
    _, image_acc, text_acc = tf.while_loop(
        lambda i, *_: i < num_micro, body, (tf.constant(0), zeros, zeros),
        parallel_iterations=1)
    flat = [-1, model.embed_dim]
    return (tf.stop_gradient(tf.reshape(image_acc, flat)),
            tf.stop_gradient(tf.reshape(text_acc, flat)))


def _backprop_cached_grads(model, images_mb, tokens_mb, d_image_mb, d_text_mb, seed, replica_id):
    """Pass 2: re-run each micro-batch and back-propagate its cached embedding gradients.

    Returns gradient sums aligned with image_trainable_variables + text_trainable_variables.
    """
    num_micro = images_mb.shape[0]
    image_vars = list(model.image_trainable_variables)
    text_vars = list(model.text_trainable_variables)
    tower_vars = image_vars + text_vars

    def body(i, *acc):
        image_seed, text_seed = micro_batch_seeds(seed, replica_id, i)
        targets, output_grads = [], []
        with tf.GradientTape() as tape:
            if image_vars:  # a locked (LiT) image tower needs no second pass
                targets.append(model.encode_image(images_mb[i], training=True, seed=image_seed))
                output_grads.append(d_image_mb[i])
            if text_vars:
                targets.append(model.encode_text(tokens_mb[i], training=True, seed=text_seed))
                output_grads.append(d_text_mb[i])
        output_grads = [tf.cast(g, t.dtype) for g, t in zip(output_grads, targets)]
        grads = tape.gradient(targets, tower_vars, output_gradients=output_grads)
        return (i + 1,) + tuple(a if g is None else a + tf.cast(tf.convert_to_tensor(g), a.dtype)
                                for a, g in zip(acc, grads))

    zeros = tuple(tf.zeros(v.shape, v.dtype) for v in tower_vars)
    with no_moving_stat_updates():
        _, *sums = tf.while_loop(lambda i, *_: i < num_micro, body, (tf.constant(0),) + zeros,
                                 parallel_iterations=1)
    return sums


def _aligned_with_trainable_variables(model, pairs):
    """Reorders (variable, grad) pairs into the order of model.trainable_variables."""
    by_id = {id(v): g for v, g in pairs}
    out = []
    for v in model.trainable_variables:
        g = by_id.get(id(v))
        out.append(tf.zeros(v.shape, v.dtype) if g is None else g)
    return out


@gin.configurable(denylist=["model", "images", "token_ids", "seed"])
def compute_contrastive_step(model,
                             images: tf.Tensor,
                             token_ids: tf.Tensor,
                             num_micro_batches: int = 1,
                             *,
                             seed: Optional[tf.Tensor] = None,
                             loss_kind: Optional[str] = None,
                             local_loss: Optional[bool] = None) -> ContrastiveStep:
    """Loss share, gradients and embeddings of one contrastive step on this replica.

    Args:
      model: a DualEncoder (encode_image / encode_text / logit_scale / logit_bias and the
        image/text/head trainable-variable groups).
      images: float32 [n, H, W, 3] in [0, 1], this replica's batch (static n).
      token_ids: int32 [n, L], 0 = padding.
      num_micro_batches: M; n must be divisible by M. Memory scales with n / M.
      seed: int32 [2] stateless seed for dropout/stochastic depth (e.g. from the global step);
        None draws one (the two passes still share it).
      loss_kind, local_loss: override `contrastive_loss`'s gin bindings when given.
    """
    if num_micro_batches < 1:
        raise ValueError(f"num_micro_batches={num_micro_batches} must be >= 1")
    loss_kwargs = {}
    if loss_kind is not None:
        loss_kwargs["kind"] = loss_kind
    if local_loss is not None:
        loss_kwargs["local_loss"] = local_loss
    replica_id = _replica_id()
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)

    if num_micro_batches == 1:
        _split(images, 1)  # validates the static batch size
        seeds = micro_batch_seeds(seed, replica_id, 0)
        loss, grads, image_emb, text_emb = _taped_single_pass(
            model, images, token_ids, seeds, loss_kwargs)
        grads = [tf.zeros(v.shape, v.dtype) if g is None else g
                 for v, g in zip(model.trainable_variables, grads)]
        return ContrastiveStep(loss, grads, image_emb, text_emb)

    images_mb = _split(images, num_micro_batches)
    tokens_mb = _split(token_ids, num_micro_batches)
    image_emb, text_emb = _embed_without_tape(model, images_mb, tokens_mb, seed, replica_id)
    loss, d_image, d_text, head_grads = _loss_and_embedding_grads(
        model, image_emb, text_emb, loss_kwargs)
    tower_sums = _backprop_cached_grads(
        model, images_mb, tokens_mb, _split(d_image, num_micro_batches),
        _split(d_text, num_micro_batches), seed, replica_id)
    tower_vars = list(model.image_trainable_variables) + list(model.text_trainable_variables)
    pairs = list(zip(tower_vars, tower_sums)) + list(zip(model.head_trainable_variables,
                                                          head_grads))
    return ContrastiveStep(loss, _aligned_with_trainable_variables(model, pairs), image_emb,
                           text_emb)


def contrastive_gradients(model, images, token_ids, num_micro_batches=None, **kwargs):
    """(loss, grads) of the contrastive loss; grads aligned with model.trainable_variables.

    In a replica context both are this replica's share: the sum over replicas is the global-batch
    loss and its exact gradient, whatever num_micro_batches is. `num_micro_batches=None` takes the
    gin binding `compute_contrastive_step.num_micro_batches` (default 1). See
    `compute_contrastive_step` for the other arguments.
    """
    if num_micro_batches is not None:
        kwargs["num_micro_batches"] = num_micro_batches
    step = compute_contrastive_step(model, images, token_ids, **kwargs)
    return step.loss, step.grads
