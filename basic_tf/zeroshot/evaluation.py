"""Zero-shot classification evaluation: exact top-1 / top-k counts under any tf.distribute strategy.

The core does not care where batches come from. A batch is a dict with
  "images": float32 [b, H, W, 3] in [0, 1],
  "labels": int32 [b], column index into the classifier,
  "mask":   float32 [b], 1 for real rows, 0 for the padding rows of a last partial batch,
as made by `basic_tf.data.pipeline.make_dataset(ctx, data, training=False)` or `zeroshot.inputs`.
Each replica counts its own rows (padding rows never count); per-step counts are reduced across
replicas with SUM and accumulated on the host in int64, so every example counts exactly once.
"""
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
from absl import logging

def classification_counts(logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, k: int,
                          with_confusion: bool) -> Dict[str, tf.Tensor]:
    """Counts for one batch. logits float [b, C], labels int [b], mask float [b].

    Returns int32 tensors: count, top1, topk, invalid_labels (real rows whose label is not in
    [0, C)) as scalars; class_count, class_top1 [C]; confusion [C, C] (rows = true label,
    columns = top-1 prediction) if `with_confusion`. Ties in the logits go to the lower class
    index (tf.math.top_k), for top-1 and top-k alike.
    """
    num_classes = tf.shape(logits)[1]
    real = tf.cast(mask, tf.int32) > 0
    labels = tf.cast(labels, tf.int32)
    valid = real & (labels >= 0) & (labels < num_classes)
    weight = tf.cast(valid, tf.int32)
    safe_labels = tf.where(valid, labels, 0)
    top = tf.math.top_k(logits, k=tf.minimum(k, num_classes)).indices  # [b, k]
    hit1 = tf.cast(tf.equal(top[:, 0], safe_labels), tf.int32) * weight
    hitk = tf.cast(tf.reduce_any(tf.equal(top, safe_labels[:, None]), axis=1), tf.int32) * weight
    counts = {
        "count": tf.reduce_sum(weight),
        "top1": tf.reduce_sum(hit1),
        "topk": tf.reduce_sum(hitk),
        "invalid_labels": tf.reduce_sum(tf.cast(real & ~valid, tf.int32)),
        "class_count": tf.math.unsorted_segment_sum(weight, safe_labels, num_classes),
        "class_top1": tf.math.unsorted_segment_sum(hit1, safe_labels, num_classes),
    }
    if with_confusion:
        counts["confusion"] = tf.math.confusion_matrix(
            safe_labels, top[:, 0], num_classes=num_classes, weights=weight, dtype=tf.int32)
    return counts


def distribute(dataset, strategy: tf.distribute.Strategy):
    """A tf.data.Dataset of global batches -> a distributed dataset; anything else is returned
    as is (already distributed, e.g. from `strategy.distribute_datasets_from_function`)."""
    if isinstance(dataset, tf.data.Dataset):
        return strategy.experimental_distribute_dataset(dataset)
    return dataset


def evaluate_classification(encode_image_fn: Callable[[tf.Tensor], tf.Tensor],
                            classifier: np.ndarray,
                            dataset,
                            strategy: Optional[tf.distribute.Strategy] = None,
                            class_names=None,
                            k: int = 5,
                            confusion_max_classes: int = 100,
                            max_steps: Optional[int] = None,
                            log_every: int = 50,
                            predictions: bool = False,
                            logit_scale: float = 1.0) -> Dict:
    """Zero-shot top-1 / top-k accuracy of `encode_image_fn` against a [D, C] classifier.

    Args:
      encode_image_fn: images float32 [b, H, W, 3] -> float32 [b, D] (e.g. `model.encode_image`).
      classifier: float32 [D, C] from `build_zero_shot_classifier`.
      dataset: batches as in the module docstring: a tf.data.Dataset of global batches, or a
        distributed dataset (per-replica batches) made by `strategy`.
      strategy: defaults to the current strategy.
      class_names: optional C names, only copied into the result for reports.
      k: the second accuracy reported (top-5 by default).
      confusion_max_classes: the confusion matrix [C, C] is counted only when C <= this.
      max_steps: stop after this many steps (None: the whole dataset).
      predictions: also return every real example's top-k classes and scores (below).
      logit_scale: the scores are softmax(logit_scale * logits), the probabilities the export's
        `classify` signature serves (pass `model.logit_scale`).

    Returns:
      dict: count, top1, top{k} (fractions), top1_correct, top{k}_correct (ints),
      per_class_accuracy (list, NaN for classes without examples), class_count (list),
      confusion (list of lists or None), class_names, num_classes, skipped_records (records
      the data pipeline dropped as unreadable, from the batches' optional "skipped"), seconds;
      with `predictions`, "predictions": {"example_id": [N] str ('' when the batches carry no
      "example_id"), "labels": int [N], "top_ids": int [N, k], "top_scores": float [N, k]},
      real examples in the order the replicas returned them.
    """
    strategy = strategy or tf.distribute.get_strategy()
    classifier = np.asarray(classifier, np.float32)
    if classifier.ndim != 2:
        raise ValueError(f"classifier must be [D, C], got shape {classifier.shape}")
    num_classes = classifier.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a classifier with {num_classes} "
                         "columns")
    with_confusion = num_classes <= confusion_max_classes
    weights = tf.constant(classifier)

    @tf.function
    def step(batch):
        def replica_fn(batch):
            emb = tf.cast(encode_image_fn(batch["images"]), tf.float32)
            logits = tf.matmul(emb, weights)
            counts = classification_counts(logits, batch["labels"], batch["mask"], k,
                                           with_confusion)
            if "skipped" in batch:  # records the data pipeline dropped (corrupt, no caption)
                counts["skipped_records"] = tf.reduce_sum(tf.cast(batch["skipped"], tf.int32))
            if not predictions:
                return counts, {}
            scores, ids = tf.math.top_k(tf.nn.softmax(logit_scale * logits),
                                        k=min(k, num_classes))
            example_id = batch.get("example_id", tf.fill(tf.shape(batch["mask"]), ""))
            return counts, {"top_ids": ids, "top_scores": scores, "mask": batch["mask"],
                            "labels": tf.cast(batch["labels"], tf.int32), "example_id": example_id}
        counts, rows = strategy.run(replica_fn, args=(batch,))
        return ({key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                 for key, value in counts.items()}, rows)

    totals = {}
    rows = {"example_id": [], "labels": [], "top_ids": [], "top_scores": []}
    start = time.time()
    steps = 0
    for batch in distribute(dataset, strategy):
        if max_steps is not None and steps >= max_steps:
            break
        counts, per_replica = step(batch)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value.numpy().astype(np.int64)
        if predictions:
            _collect_rows(rows, per_replica, strategy)
        steps += 1
        if log_every and steps % log_every == 0:
            seen = int(totals["count"])
            logging.info("eval step %d: %d examples, top-1 %.4f, %.1f examples/s", steps, seen,
                         totals["top1"] / max(seen, 1), seen / (time.time() - start))
    if not totals:
        raise ValueError("the evaluation dataset yielded no batch")
    if totals["invalid_labels"]:
        raise ValueError(f"{int(totals['invalid_labels'])} real examples have labels outside "
                         f"[0, {num_classes}) of the classifier's {num_classes} classes: check "
                         "that the class-name set matches the dataset (and that labelled data "
                         "was given: unlabelled records read as label -1)")
    result = _summarise(totals, k, num_classes, class_names, time.time() - start)
    if predictions:
        result["predictions"] = {key: np.concatenate(value) for key, value in rows.items()}
        result["predictions"]["example_id"] = [
            i.decode("utf-8", "replace") for i in result["predictions"]["example_id"]]
    return result


def _collect_rows(rows: Dict, per_replica: Dict, strategy) -> None:
    """Appends each replica's real rows (mask 1) of one step to `rows` (host NumPy arrays).
    Local results, not a gather: example ids are strings, which collectives cannot carry."""
    local = {key: strategy.experimental_local_results(value)
             for key, value in per_replica.items()}
    for replica in range(len(local["mask"])):
        real = local["mask"][replica].numpy() > 0
        for key in rows:
            rows[key].append(local[key][replica].numpy()[real])


def _summarise(totals, k, num_classes, class_names, seconds) -> Dict:
    count = int(totals["count"])
    class_count = totals["class_count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(class_count > 0, totals["class_top1"] / np.maximum(class_count, 1),
                             np.nan)
    return {
        "count": count,
        "top1": float(totals["top1"]) / count if count else float("nan"),
        f"top{k}": float(totals["topk"]) / count if count else float("nan"),
        "top1_correct": int(totals["top1"]),
        f"top{k}_correct": int(totals["topk"]),
        "k": k,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "class_count": class_count.tolist(),
        "per_class_accuracy": per_class.tolist(),
        "confusion": totals["confusion"].tolist() if "confusion" in totals else None,
        "skipped_records": int(totals.get("skipped_records", 0)),
        "seconds": seconds,
    }
