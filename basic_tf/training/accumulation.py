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

The function knows no model (GradCache's hooks): the caller passes the two encoders, the loss
and the variable groups (training/contrastive.py builds them for a DualEncoder). A new loss is
another `loss_fn`; a frozen tower is an encoder run in inference mode with an empty variable
group (a tower with no variables to train is not re-run in pass 2).
"""
import collections
from typing import Callable, Sequence

import tensorflow as tf

from basic_tf.models.layers import fold_seed, no_moving_stat_updates

ContrastiveStep = collections.namedtuple(
    "ContrastiveStep", ["loss", "grads", "image_emb", "text_emb"])
ContrastiveStep.__doc__ = """Result of one contrastive gradient computation on this replica.

loss: float32 scalar, this replica's share of the global-batch loss.
grads: list aligned with image_variables + text_variables + head_variables (zeros where a
  variable is unconnected).
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
        raise RuntimeError("compute_contrastive_step must run in a replica context (call it "
                           "inside strategy.run, or outside any strategy), not in cross-replica "
                           "context")
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def _split(x: tf.Tensor, num_micro_batches: int) -> tf.Tensor:
    """[n, ...] -> [M, n/M, ...]: contiguous equal slices, in order."""
    n = x.shape[0]
    if n is None:
        raise ValueError("compute_contrastive_step needs a static batch size (batch with "
                         "drop_remainder=True); got a batch of unknown size")
    if n % num_micro_batches:
        raise ValueError(f"batch of {n} examples cannot be split into num_micro_batches="
                         f"{num_micro_batches} equal micro-batches")
    return tf.reshape(x, tf.concat([[num_micro_batches, n // num_micro_batches],
                                    tf.shape(x)[1:]], axis=0))


def _zeros_for_none(grads, variables) -> list:
    """Gradients with None (a variable the loss does not reach) replaced by zeros."""
    return [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables)]


def _loss_and_embedding_grads(loss_fn, image_emb, text_emb, head_vars):
    """Global loss share and its gradients w.r.t. this replica's embeddings and the head vars."""
    with tf.GradientTape() as tape:
        tape.watch([image_emb, text_emb])
        loss = loss_fn(image_emb, text_emb)
    d_image, d_text, *head_grads = tape.gradient(loss, [image_emb, text_emb] + head_vars)
    # The gradient of all_gather loses static shapes; the embeddings' shapes are known.
    return (loss, tf.ensure_shape(d_image, image_emb.shape), tf.ensure_shape(d_text, text_emb.shape),
            head_grads)


def _embed_without_tape(encoders, images_mb, tokens_mb, seed, replica_id, embed_dim):
    """Pass 1: [M, m, ...] inputs -> ([M*m, D], [M*m, D]) embeddings, one micro-batch at a time.

    The embeddings are a float32 [M, m, D] loop variable written in place
    (tensor_scatter_nd_update), not a TensorArray: XLA compiles both, and DTensor (model
    parallelism, basic_tf.parallel.dtensor) has no layout propagation for TensorList ops.
    """
    encode_image_fn, encode_text_fn = encoders
    num_micro, micro = images_mb.shape[0], images_mb.shape[1]

    def body(i, image_acc, text_acc):
        image_seed, text_seed = micro_batch_seeds(seed, replica_id, i)
        image_emb = encode_image_fn(images_mb[i], image_seed)
        text_emb = encode_text_fn(tokens_mb[i], text_seed)
        write = lambda acc, emb: tf.tensor_scatter_nd_update(
            acc, [[i]], tf.expand_dims(tf.cast(emb, tf.float32), 0))
        return i + 1, write(image_acc, image_emb), write(text_acc, text_emb)

    zeros = tf.zeros([num_micro, micro, embed_dim], tf.float32)
    _, image_acc, text_acc = tf.while_loop(
        lambda i, *_: i < num_micro, body, (tf.constant(0), zeros, zeros),
        parallel_iterations=1)
    flat = [-1, embed_dim]
    return (tf.stop_gradient(tf.reshape(image_acc, flat)),
            tf.stop_gradient(tf.reshape(text_acc, flat)))


def _backprop_cached_grads(towers, seed, replica_id):
    """Pass 2: re-run each micro-batch and back-propagate its cached embedding gradients.

    towers: (encode_fn, inputs [M, m, ...], d_emb [M, m, D], variables) for image then text;
    a tower with no variables is not re-run. Returns gradient sums aligned with the towers'
    variables, concatenated.
    """
    num_micro = towers[0][1].shape[0]
    tower_vars = [v for *_, variables in towers for v in variables]

    def body(i, *acc):
        seeds = micro_batch_seeds(seed, replica_id, i)
        targets, output_grads = [], []
        with tf.GradientTape() as tape:
            for (encode_fn, inputs, d_emb, variables), tower_seed in zip(towers, seeds):
                if variables:
                    emb = encode_fn(inputs[i], tower_seed)
                    targets.append(emb)
                    output_grads.append(tf.cast(d_emb[i], emb.dtype))
        grads = tape.gradient(targets, tower_vars, output_gradients=output_grads)
        return (i + 1,) + tuple(a if g is None else a + tf.cast(tf.convert_to_tensor(g), a.dtype)
                                for a, g in zip(acc, grads))

    zeros = tuple(tf.zeros(v.shape, v.dtype) for v in tower_vars)
    with no_moving_stat_updates():
        _, *sums = tf.while_loop(lambda i, *_: i < num_micro, body, (tf.constant(0),) + zeros,
                                 parallel_iterations=1)
    return sums


def compute_contrastive_step(encode_image_fn: Callable, encode_text_fn: Callable,
                             loss_fn: Callable,
                             images: tf.Tensor,
                             token_ids: tf.Tensor,
                             *,
                             image_variables: Sequence[tf.Variable],
                             text_variables: Sequence[tf.Variable],
                             head_variables: Sequence[tf.Variable],
                             embed_dim: int,
                             num_micro_batches: int,
                             seed: tf.Tensor) -> ContrastiveStep:
    """Loss share, gradients and embeddings of one contrastive step on this replica.

    Args:
      encode_image_fn: (images [m, H, W, 3], seed int32 [2]) -> [m, D] embeddings; runs the
        tower in the mode it should train in (a frozen tower: inference mode).
      encode_text_fn: (token_ids [m, L], seed int32 [2]) -> [m, D].
      loss_fn: (image_emb float32 [n, D], text_emb float32 [n, D]) -> float32 scalar, this
        replica's share of the global-batch loss (e.g. losses.contrastive_loss with the logit
        scale); its own variables are `head_variables`.
      images: float32 [n, H, W, 3], this replica's batch (static n); token_ids: int32 [n, L].
      image_variables / text_variables: what each encoder trains (empty: the tower is frozen
        and gets no gradient); head_variables: what loss_fn trains (logit scale, bias).
      embed_dim: D, the embeddings' width (pass 1 caches [n, D] of each tower).
      num_micro_batches: M >= 1; n must be divisible by M. Memory scales with n / M.
      seed: int32 [2] stateless seed for dropout/stochastic depth (e.g. from the global step);
        both passes fold the replica, micro-batch and tower into it (micro_batch_seeds).
    """
    if not isinstance(num_micro_batches, int) or num_micro_batches < 1:
        raise ValueError(f"num_micro_batches={num_micro_batches!r} must be an integer >= 1")
    image_vars, text_vars, head_vars = map(list, (image_variables, text_variables,
                                                  head_variables))
    variables = image_vars + text_vars + head_vars
    replica_id = _replica_id()
    images_mb = _split(images, num_micro_batches)
    tokens_mb = _split(token_ids, num_micro_batches)

    if num_micro_batches == 1:  # one taped forward, gradients straight from the loss
        image_seed, text_seed = micro_batch_seeds(seed, replica_id, 0)
        with tf.GradientTape() as tape:
            image_emb = encode_image_fn(images, image_seed)
            text_emb = encode_text_fn(token_ids, text_seed)
            loss = loss_fn(image_emb, text_emb)
        grads = _zeros_for_none(tape.gradient(loss, variables), variables)
        return ContrastiveStep(loss, grads, image_emb, text_emb)

    image_emb, text_emb = _embed_without_tape((encode_image_fn, encode_text_fn), images_mb,
                                              tokens_mb, seed, replica_id, embed_dim)
    loss, d_image, d_text, head_grads = _loss_and_embedding_grads(
        loss_fn, image_emb, text_emb, head_vars)
    tower_sums = _backprop_cached_grads(
        [(encode_image_fn, images_mb, _split(d_image, num_micro_batches), image_vars),
         (encode_text_fn, tokens_mb, _split(d_text, num_micro_batches), text_vars)],
        seed, replica_id)
    return ContrastiveStep(loss, _zeros_for_none(tower_sums + head_grads, variables), image_emb,
                           text_emb)
