"""Image-text retrieval: Recall@K in both directions, where an image may have several captions.

A batch is a dict with
  "images":       float32 [b, H, W, 3] in [0, 1],
  "token_ids":    int32 [b, K, L], up to K captions per image (padding captions are all 0),
  "caption_mask": float32 [b, K], 1 for real captions,
  "mask":         float32 [b], 1 for real rows, 0 for the padding rows of a last partial batch,
  "caption_hash": int64 [b, K], optional: a fingerprint of each caption's text (lower-cased,
                  whitespace folded); captions with equal hashes are the same caption,
as made by `basic_tf.zeroshot.inputs.retrieval_dataset`. Embeddings are computed on the
replicas, gathered to the host with their masks (so padding never counts), then scored.

Definitions (CLIP / clip-benchmark), with ground truth by caption identity: the candidates and
queries are the distinct caption texts. image->text R@K = fraction of images (with >= 1 caption)
for which at least one of their caption texts is among the K texts most similar to the image;
text->image R@K = fraction of distinct texts for which at least one image captioned with that
text is among the K most similar images. With distinct captions this is the usual "own captions /
own image"; when captions repeat (class-template captions: "a photo of a cat." on every cat
image), copies of a text are the same embedding, and counting only its "own" image made R@K
meaningless (t2i R@1 ~ 1 / images per text). Ties between a positive and a negative score count
in the positive's favour.
"""
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from basic_tf.zeroshot.evaluation import distribute

GROUND_TRUTH = ("caption identity: candidates and queries are the distinct caption texts "
                "(lower-cased, whitespace folded); every image with a caption of that text is a "
                "hit")


def embed_retrieval_dataset(encode_image_fn: Callable[[tf.Tensor], tf.Tensor],
                            encode_text_fn: Callable[[tf.Tensor], tf.Tensor],
                            dataset,
                            strategy: Optional[tf.distribute.Strategy] = None,
                            max_steps: Optional[int] = None):
    """Embeds every real image and caption of `dataset` (batches as in the module docstring).

    Returns (image_emb float32 [N, D], text_emb float32 [M, D], text_to_image int64 [M],
    skipped_records int, caption_groups int64 [M]): text_to_image[j] = row of the image that
    caption j describes; skipped_records = sum of the batches' optional "skipped" (unreadable
    records dropped); caption_groups[j] = caption_groups[j'] when captions j and j' have the
    same text (from the batches' "caption_hash"; without it every caption is its own group).
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
            hashes = batch.get("caption_hash", tf.fill(tf.shape(batch["caption_mask"]),
                                                       tf.constant(-1, tf.int64)))
            return (image_emb, text_emb, batch["caption_mask"], batch["mask"], hashes,
                    skipped)
        *outputs, skipped = strategy.run(replica_fn, args=(batch,))
        return ([strategy.gather(x, axis=0) for x in outputs]
                + [strategy.reduce(tf.distribute.ReduceOp.SUM, skipped, axis=None)])

    images, texts, owners, hashes = [], [], [], []
    offset = skipped_records = 0
    for steps, batch in enumerate(distribute(dataset, strategy)):
        if max_steps is not None and steps >= max_steps:
            break
        image_emb, text_emb, caption_mask, mask, caption_hash, skipped = (
            x.numpy() for x in step(batch))
        skipped_records += int(skipped)
        real = mask > 0
        image_emb, text_emb, caption_mask = image_emb[real], text_emb[real], caption_mask[real] > 0
        rows, cols = np.nonzero(caption_mask)  # row-major: captions stay in order per image
        images.append(image_emb)
        texts.append(text_emb[rows, cols])
        owners.append(rows + offset)
        hashes.append(caption_hash[real][rows, cols])
        offset += image_emb.shape[0]
    if not images:
        raise ValueError("the retrieval dataset yielded no batch")
    hashes = np.concatenate(hashes)
    if (hashes == -1).all():  # no caption_hash: every caption is distinct
        groups = np.arange(hashes.size, dtype=np.int64)
    else:
        groups = np.unique(hashes, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return (np.concatenate(images).astype(np.float32), np.concatenate(texts).astype(np.float32),
            np.concatenate(owners).astype(np.int64), skipped_records, groups)


def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024,
                caption_groups: Optional[np.ndarray] = None) -> Dict[str, Dict[int, float]]:
    """R@K both ways over distinct captions. image_emb [N, D], text_emb [M, D] (similarity = dot
    product), text_to_image int [M] in [0, N); caption_groups int [M]: captions with equal ids
    have the same text (None: all distinct), so the same embedding; each text is ranked and
    queried once. Image i and text t are positives when i has a caption with text t (module
    docstring). Works in chunks of `chunk_size` rows (memory O(chunk * (N + distinct texts)))."""
    owners = np.asarray(text_to_image, np.int64)
    num_images, num_texts = int(np.shape(image_emb)[0]), int(np.shape(text_emb)[0])
    out_of_range = num_texts and (owners.min() < 0 or owners.max() >= num_images)
    if owners.shape != (num_texts,) or out_of_range:
        raise ValueError(f"text_to_image must be [{num_texts}] ints in [0, {num_images})")
    if caption_groups is None:
        caption_groups = np.arange(num_texts)
    if np.shape(caption_groups) != (num_texts,):
        raise ValueError(f"caption_groups must be [{num_texts}] ints, got "
                         f"{np.shape(caption_groups)}")
    _, first, groups = np.unique(np.asarray(caption_groups), return_index=True,
                                 return_inverse=True)
    groups = groups.reshape(-1)
    image_emb = tf.constant(image_emb, tf.float32)
    text_emb = tf.gather(tf.constant(text_emb, tf.float32), first)  # one row per distinct text
    # The distinct (text, image) pairs: which images each caption text belongs to.
    pairs = np.unique(np.stack([groups, owners], axis=1), axis=0)

    def ranks(queries, keys, query_of_pair, key_of_pair):
        """Per query row (in chunks): how many negative keys score strictly higher than its best
        positive key; positives are the (query, key) pairs listed."""
        out = []
        for begin in range(0, int(queries.shape[0]), chunk_size):
            end = min(begin + chunk_size, int(queries.shape[0]))
            positive = np.zeros([end - begin, int(keys.shape[0])], bool)
            sel = (query_of_pair >= begin) & (query_of_pair < end)
            positive[query_of_pair[sel] - begin, key_of_pair[sel]] = True
            sims = tf.matmul(queries[begin:end], keys, transpose_b=True)
            best = tf.reduce_max(tf.where(positive, sims, -np.inf), axis=1)
            higher = (sims > best[:, None]) & ~positive
            out.append(tf.reduce_sum(tf.cast(higher, tf.int32), axis=1).numpy())
        return np.concatenate(out) if out else np.zeros([0], np.int32)

    # Text -> image: positives of text t = the images with a caption t; image -> text: the texts
    # of its captions.
    t2i = ranks(text_emb, image_emb, pairs[:, 0], pairs[:, 1])
    i2t = ranks(image_emb, text_emb, pairs[:, 1], pairs[:, 0])
    has_caption = np.bincount(owners, minlength=num_images) > 0
    i2t = i2t[has_caption]
    return {
        "image_to_text": {k: float(np.mean(i2t < k)) if i2t.size else float("nan") for k in ks},
        "text_to_image": {k: float(np.mean(t2i < k)) if t2i.size else float("nan") for k in ks},
    }


def evaluate_retrieval(encode_image_fn, encode_text_fn, dataset,
                       strategy: Optional[tf.distribute.Strategy] = None,
                       ks: Sequence[int] = (1, 5, 10),
                       max_steps: Optional[int] = None) -> Dict:
    """Embeds `dataset` and returns R@K both ways (ground truth by caption identity) plus counts:
    {image_to_text: {k: r}, text_to_image: {k: r}, num_images, num_captions,
    num_distinct_captions, ground_truth (how positives were defined), skipped_records,
    seconds}."""
    start = time.time()
    image_emb, text_emb, owners, skipped, groups = embed_retrieval_dataset(
        encode_image_fn, encode_text_fn, dataset, strategy, max_steps)
    result = recall_at_k(image_emb, text_emb, owners, ks, caption_groups=groups)
    distinct = int(np.unique(groups).size)
    result.update(num_images=int(image_emb.shape[0]), num_captions=int(text_emb.shape[0]),
                  num_distinct_captions=distinct, ground_truth=GROUND_TRUTH,
                  skipped_records=skipped, seconds=time.time() - start)
    logging.info("retrieval: %d images, %d captions (%d distinct), i2t %s, t2i %s",
                 result["num_images"], result["num_captions"], distinct,
                 result["image_to_text"], result["text_to_image"])
    return result
