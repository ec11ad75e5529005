"""Image-text retrieval: Recall@K in both directions, where an image may have several captions.

A batch is a dict with
  "images":       float32 [b, H, W, 3] in [0, 1],
  "token_ids":    int32 [b, K, L], up to K captions per image (padding captions are all 0),
  "caption_mask": float32 [b, K], 1 for real captions,
  "mask":         float32 [b], 1 for real rows, 0 for the padding rows of a last partial batch,
as made by `basic_tf.zeroshot.inputs.retrieval_dataset`. Embeddings are computed on the
replicas, gathered to the host with their masks (so padding never counts), then scored.

Definitions (CLIP / clip-benchmark): image->text R@K = fraction of images (with >= 1 caption)
for which at least one of their captions is among the K captions most similar to the image;
text->image R@K = fraction of captions whose own image is among the K most similar images.
Ties between a positive and a negative score count in the positive's favour.
"""
import time
from typing import Callable, Dict, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from basic_tf.zeroshot.evaluation import distribute


def embed_retrieval_dataset(encode_image_fn: Callable[[tf.Tensor], tf.Tensor],
                            encode_text_fn: Callable[[tf.Tensor], tf.Tensor],
                            dataset,
                            strategy: Optional[tf.distribute.Strategy] = None,
                            max_steps: Optional[int] = None):
    """Embeds every real image and caption of `dataset` (batches as in the module docstring).

    Returns (image_emb float32 [N, D], text_emb float32 [M, D], text_to_image int64 [M],
    skipped_records int): text_to_image[j] = row of the image that caption j describes;
    skipped_records = sum of the batches' optional "skipped" (unreadable records dropped).
    """
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def step(batch):
        def replica_fn(batch):
            token_ids = batch["token_ids"]
            shape = tf.shape(token_ids)
            image_emb = tf.cast(encode_image_fn(batch["images"]), tf.float32)
            text_emb = tf.cast(encode_text_fn(tf.reshape(token_ids, [-1, shape[2]])), tf.float32)
            text_emb = tf.reshape(text_emb, [shape[0], shape[1], -1])
            skipped = tf.reduce_sum(batch["skipped"]) if "skipped" in batch else tf.constant(0)
            return image_emb, text_emb, batch["caption_mask"], batch["mask"], skipped
        *outputs, skipped = strategy.run(replica_fn, args=(batch,))
        return ([strategy.gather(x, axis=0) for x in outputs]
                + [strategy.reduce(tf.distribute.ReduceOp.SUM, skipped, axis=None)])

    images, texts, owners = [], [], []
    offset = skipped_records = 0
    for steps, batch in enumerate(distribute(dataset, strategy)):
        if max_steps is not None and steps >= max_steps:
            break
        image_emb, text_emb, caption_mask, mask, skipped = (x.numpy() for x in step(batch))
        skipped_records += int(skipped)
        real = mask > 0
        image_emb, text_emb, caption_mask = image_emb[real], text_emb[real], caption_mask[real] > 0
        rows, cols = np.nonzero(caption_mask)  # row-major: captions stay in order per image
        images.append(image_emb)
        texts.append(text_emb[rows, cols])
        owners.append(rows + offset)
        offset += image_emb.shape[0]
    if not images:
        raise ValueError("the retrieval dataset yielded no batch")
    return (np.concatenate(images).astype(np.float32), np.concatenate(texts).astype(np.float32),
            np.concatenate(owners).astype(np.int64), skipped_records)


def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                ks: Sequence[int] = (1, 5, 10),
                chunk_size: int = 1024) -> Dict[str, Dict[int, float]]:
    """R@K both ways. image_emb [N, D], text_emb [M, D] (similarity = dot product),
    text_to_image int [M] in [0, N). Works in chunks of `chunk_size` rows (memory O(chunk * N))."""
    image_emb = tf.constant(image_emb, tf.float32)
    text_emb = tf.constant(text_emb, tf.float32)
    owners = np.asarray(text_to_image, np.int64)
    num_images, num_texts = int(image_emb.shape[0]), int(text_emb.shape[0])
    out_of_range = num_texts and (owners.min() < 0 or owners.max() >= num_images)
    if owners.shape != (num_texts,) or out_of_range:
        raise ValueError(f"text_to_image must be [{num_texts}] ints in [0, {num_images})")
    owners_t = tf.constant(owners)

    # Text -> image: rank of the own image = number of images scoring strictly higher.
    t2i_ranks = []
    for begin in range(0, num_texts, chunk_size):
        sims = tf.matmul(text_emb[begin:begin + chunk_size], image_emb, transpose_b=True)
        own = tf.gather(sims, owners_t[begin:begin + chunk_size], batch_dims=1)
        t2i_ranks.append(tf.reduce_sum(tf.cast(sims > own[:, None], tf.int32), axis=1).numpy())

    # Image -> text: rank of the best own caption = number of other captions scoring higher.
    i2t_ranks = []
    for begin in range(0, num_images, chunk_size):
        ids = tf.range(begin, min(begin + chunk_size, num_images), dtype=tf.int64)
        sims = tf.matmul(image_emb[begin:begin + chunk_size], text_emb, transpose_b=True)
        positive = tf.equal(ids[:, None], owners_t[None, :])
        best = tf.reduce_max(tf.where(positive, sims, -np.inf), axis=1)
        higher = (sims > best[:, None]) & ~positive
        i2t_ranks.append(tf.reduce_sum(tf.cast(higher, tf.int32), axis=1).numpy())

    has_caption = np.bincount(owners, minlength=num_images) > 0
    t2i = np.concatenate(t2i_ranks) if t2i_ranks else np.zeros([0], np.int32)
    i2t = (np.concatenate(i2t_ranks) if i2t_ranks else np.zeros([0], np.int32))[has_caption]
    return {
        "image_to_text": {k: float(np.mean(i2t < k)) if i2t.size else float("nan") for k in ks},
        "text_to_image": {k: float(np.mean(t2i < k)) if t2i.size else float("nan") for k in ks},
    }


@gin.configurable(denylist=["encode_image_fn", "encode_text_fn", "dataset", "strategy"])
def evaluate_retrieval(encode_image_fn, encode_text_fn, dataset,
                       strategy: Optional[tf.distribute.Strategy] = None,
                       ks: Sequence[int] = (1, 5, 10),
                       max_steps: Optional[int] = None) -> Dict:
    """Embeds `dataset` and returns R@K both ways plus counts:
    {image_to_text: {k: r}, text_to_image: {k: r}, num_images, num_captions, skipped_records,
    seconds}."""
    start = time.time()
    image_emb, text_emb, owners, skipped = embed_retrieval_dataset(
        encode_image_fn, encode_text_fn, dataset, strategy, max_steps)
    result = recall_at_k(image_emb, text_emb, owners, ks)
    result.update(num_images=int(image_emb.shape[0]), num_captions=int(text_emb.shape[0]),
                  skipped_records=skipped, seconds=time.time() - start)
    logging.info("retrieval: %d images, %d captions, i2t %s, t2i %s", result["num_images"],
                 result["num_captions"], result["image_to_text"], result["text_to_image"])
    return result
