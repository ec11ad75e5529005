"""Contrastive image-text losses with negatives from every replica.

Two losses over a batch of N paired, L2-normalised embeddings (row i of each tower is a pair):
- "softmax": symmetric InfoNCE (CLIP/ALIGN/BASIC): the mean of the image->text and text->image
  cross-entropies of the logits `scale * I @ T^T`, the diagonal being the targets (open_clip's
  convention).
- "sigmoid": SigLIP: `-sum_ij log sigmoid(z_ij * (scale * I_i . T_j + bias))` over all N^2 pairs,
  z = +1 on the diagonal and -1 elsewhere, divided by N.

Distribution. In a replica context with more than one replica, both towers' embeddings are
all-gathered so every replica sees the global batch as negatives, and the value returned is the
replica's SHARE of the global loss: the sum of the shares over replicas is the global-batch loss,
and, because `all_gather` back-propagates by summing incoming gradients over replicas, the sum of
the replicas' gradients is the global-batch loss's gradient (the tf.distribute convention, like
dividing per-example losses by the global batch). Two ways to get the share:
- global (default): every replica computes the full N x N loss and returns loss / R
  (memory O(N^2) per replica);
- local (`local_loss=True`): a replica computes only its own rows against the global columns
  (image rows x all texts, text rows x all images), memory O(N^2 / R) (open_clip's
  `--local-loss --gather-with-grad`).
Both give the same sums and the same summed gradients.

Chunking (`loss_chunk=C`, chunked_loss.py): the same loss with the columns visited in blocks of
C, the logits recomputed in the backward pass: memory O(n C + N D) instead of the n x N logits
(global: n = N; local: n = N / R), equal to the unchunked loss to float32 rounding.
"""
from typing import Optional

import tensorflow as tf

from basic_tf import chunked_loss

LOSS_KINDS = ("softmax", "sigmoid")


def _multi_replica_context() -> Optional[tf.distribute.ReplicaContext]:
    """The replica context if we run in one with more than one replica, else None."""
    if tf.distribute.in_cross_replica_context():
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def _softmax_rows_sum(image_rows, text_rows, all_images, all_texts, scale, row_offset):
    """Sum over the given rows of the image->text and text->image cross-entropies.

    image_rows/text_rows: [n, D] (rows row_offset..row_offset+n of the global batch);
    all_images/all_texts: [N, D]. Returns a float32 scalar.
    """
    n = tf.shape(image_rows)[0]
    targets = tf.range(n) + row_offset
    logits_i2t = scale * tf.matmul(image_rows, all_texts, transpose_b=True)  # [n, N]
    logits_t2i = scale * tf.matmul(text_rows, all_images, transpose_b=True)  # [n, N]
    ce_i2t = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits_i2t)
    ce_t2i = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits_t2i)
    return tf.reduce_sum(ce_i2t) + tf.reduce_sum(ce_t2i)


def _sigmoid_rows_sum(image_rows, all_texts, scale, bias, row_offset):
    """Sum over the given image rows and every text of -log sigmoid(z * logit). Float32 scalar."""
    n = tf.shape(image_rows)[0]
    big_n = tf.shape(all_texts)[0]
    logits = scale * tf.matmul(image_rows, all_texts, transpose_b=True)  # [n, N]
    if bias is not None:
        logits = logits + bias
    positives = tf.one_hot(tf.range(n) + row_offset, big_n, dtype=logits.dtype)
    signs = 2.0 * positives - 1.0
    return -tf.reduce_sum(tf.math.log_sigmoid(signs * logits))


def _chunked_loss_sum(kind, image_rows, text_rows, all_images, all_texts, scale, bias,
                      row_offset, chunk, all_rows):
    """_loss_sum's value in blocks of `chunk` columns (chunked_loss.py). all_rows: the rows are
    the whole batch (row_offset 0), so the softmax loss's two directions share one matrix."""
    if kind == "sigmoid":
        return chunked_loss.sigmoid_sum(image_rows, all_texts, scale,
                                        tf.zeros([]) if bias is None else bias, chunk, row_offset)
    # Cross-entropy = log-sum-exp - positive logit; the positive logits (the rows' own pairs,
    # image_rows . text_rows) are differentiated by autodiff.
    positives = scale * tf.reduce_sum(image_rows * text_rows)
    if all_rows:
        lse = chunked_loss.softmax_lse_sum(image_rows, all_texts, scale, chunk, columns_too=True)
    else:
        lse = (chunked_loss.softmax_lse_sum(image_rows, all_texts, scale, chunk, False)
               + chunked_loss.softmax_lse_sum(text_rows, all_images, scale, chunk, False))
    return 0.5 * lse - positives


def _loss_sum(kind, image_rows, text_rows, all_images, all_texts, scale, bias, row_offset,
              chunk=0, all_rows=False):
    if chunk:
        return _chunked_loss_sum(kind, image_rows, text_rows, all_images, all_texts, scale, bias,
                                 row_offset, chunk, all_rows)
    if kind == "softmax":
        # The softmax loss averages its two directions: each row contributes half.
        return 0.5 * _softmax_rows_sum(image_rows, text_rows, all_images, all_texts, scale,
                                       row_offset)
    return _sigmoid_rows_sum(image_rows, all_texts, scale, bias, row_offset)


def contrastive_loss(image_emb: tf.Tensor,
                     text_emb: tf.Tensor,
                     logit_scale: tf.Tensor,
                     *,
                     kind: str = "softmax",
                     logit_bias: Optional[tf.Tensor] = None,
                     local_loss: bool = False,
                     chunk: int = 0) -> tf.Tensor:
    """Contrastive loss of paired embeddings (this replica's share in a replica context).

    Args:
      image_emb: float [n, D] L2-normalised image embeddings (this replica's rows).
      text_emb: float [n, D] L2-normalised text embeddings; row i pairs with image row i.
      logit_scale: float scalar, the inverse temperature (already exponentiated).
      kind: "softmax" (symmetric InfoNCE) or "sigmoid" (SigLIP).
      logit_bias: float scalar added to the logits (sigmoid loss only; None for none).
      local_loss: in a multi-replica context, compute only this replica's rows against the
        global columns (O(N^2/R) memory) instead of the full loss / R. Same sums either way.
      chunk: C > 0 computes the loss over blocks of C columns, recomputing them for the
        gradient (chunked_loss.py; memory O(n C + N D), C must divide the global batch N);
        0: the n x N logits at once.

    Returns:
      float32 scalar: the loss over the global batch, or, in a multi-replica context, this
      replica's share of it (the shares sum to the global loss; see the module docstring).
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"contrastive loss kind={kind!r} is not one of {LOSS_KINDS}")
    if kind == "softmax" and logit_bias is not None:
        raise ValueError("logit_bias is for the sigmoid loss; the softmax loss is invariant to it")
    image_emb = tf.cast(image_emb, tf.float32)
    text_emb = tf.cast(text_emb, tf.float32)
    scale = tf.cast(logit_scale, tf.float32)
    bias = None if logit_bias is None else tf.cast(logit_bias, tf.float32)
    if chunk:
        chunked_loss.check_chunk(chunk, None)

    ctx = _multi_replica_context()
    if ctx is None:
        n = tf.cast(tf.shape(image_emb)[0], tf.float32)
        total = _loss_sum(kind, image_emb, text_emb, image_emb, text_emb, scale, bias, 0, chunk,
                          all_rows=True)
        return total / n

    num_replicas = ctx.num_replicas_in_sync
    all_images = ctx.all_gather(image_emb, axis=0)
    all_texts = ctx.all_gather(text_emb, axis=0)
    global_n = tf.cast(tf.shape(all_images)[0], tf.float32)
    if local_loss:
        offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * tf.shape(image_emb)[0]
        rows = _loss_sum(kind, image_emb, text_emb, all_images, all_texts, scale, bias, offset,
                         chunk)
        return rows / global_n
    total = _loss_sum(kind, all_images, all_texts, all_images, all_texts, scale, bias, 0, chunk,
                      all_rows=True)
    return total / global_n / num_replicas


def in_batch_accuracy(image_emb: tf.Tensor, text_emb: tf.Tensor,
                      chunk: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Fractions of rows whose paired item has the largest similarity: (image->text,
    text->image), float32 scalars.

    Local to the batch given (no gathering): a cheap training signal for logs. Written with
    reductions (max, and the diagonal as a masked sum, exact) rather than arg-max, which DTensor
    cannot expand over a batch-sharded similarity matrix; an exact tie counts as correct.
    chunk: C > 0 visits the columns in blocks of C (chunked_loss.in_batch_hits; C must divide
    the batch): the same fractions in O(n C) memory instead of the [n, n] similarities and
    identity, which at n = 65,536 are 16 GiB each.
    """
    if chunk:
        n = tf.shape(image_emb)[0]
        i2t, t2i = chunked_loss.in_batch_hits(tf.cast(image_emb, tf.float32),
                                              tf.cast(text_emb, tf.float32), chunk)
        return i2t / tf.cast(n, tf.float32), t2i / tf.cast(n, tf.float32)
    sims = tf.matmul(tf.cast(image_emb, tf.float32), tf.cast(text_emb, tf.float32),
                     transpose_b=True)
    paired = tf.reduce_sum(sims * tf.eye(tf.shape(sims)[0]), axis=1)  # sims[i, i]
    i2t = tf.reduce_mean(tf.cast(paired >= tf.reduce_max(sims, axis=1), tf.float32))
    t2i = tf.reduce_mean(tf.cast(paired >= tf.reduce_max(sims, axis=0), tf.float32))
    return i2t, t2i
