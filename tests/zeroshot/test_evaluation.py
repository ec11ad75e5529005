"""evaluate_classification: exact counts against NumPy, padding rows, 1 and 4 replicas."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.zeroshot import evaluate_classification
from basic_tf.zeroshot.evaluation import classification_counts
from basic_tf.data.pipeline import pad_to_batches

from zeroshot_helpers import EMBED_DIM, StandInImageEncoder

NUM_CLASSES, NUM_EXAMPLES, IMAGE = 6, 23, 8


def numpy_counts(logits, labels, k):
    """Reference: stable argsort (ties -> lower index, like tf.math.top_k)."""
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = order[:, 0] == labels
    topk = (order[:, :k] == labels[:, None]).any(axis=1)
    confusion = np.zeros([logits.shape[1]] * 2, np.int64)
    np.add.at(confusion, (labels, order[:, 0]), 1)
    class_count = np.bincount(labels, minlength=logits.shape[1])
    class_top1 = np.bincount(labels, weights=top1, minlength=logits.shape[1])
    return top1.sum(), topk.sum(), confusion, class_count, class_top1


def test_batch_counts_ignore_padding_and_flag_bad_labels():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=[12, 7]).astype(np.float32)  # many ties
    labels = rng.integers(0, 7, size=[12]).astype(np.int32)
    mask = np.ones([12], np.float32)
    mask[9:] = 0.0                    # padding rows: would count if the mask were ignored
    labels[10] = -1                   # padding may carry any label
    labels[3], mask[3] = 99, 1.0      # a real row with an impossible label
    got = {k: v.numpy() for k, v in classification_counts(
        tf.constant(logits), tf.constant(labels), tf.constant(mask), 3, True).items()}
    keep = (mask > 0) & (labels >= 0) & (labels < 7)
    top1, topk, confusion, class_count, class_top1 = numpy_counts(logits[keep], labels[keep], 3)
    assert got["count"] == keep.sum() == 8
    assert got["top1"] == top1 and got["topk"] == topk and got["invalid_labels"] == 1
    np.testing.assert_array_equal(got["confusion"], confusion)
    np.testing.assert_array_equal(got["class_count"], class_count)
    np.testing.assert_array_equal(got["class_top1"], class_top1)


@pytest.fixture(scope="module")
def problem():
    """Images, labels, a random classifier, the stand-in encoder and the NumPy answer."""
    tf.keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=[NUM_EXAMPLES, IMAGE, IMAGE, 3]).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=[NUM_EXAMPLES]).astype(np.int32)
    classifier = rng.normal(size=[EMBED_DIM, NUM_CLASSES]).astype(np.float32)
    encoder = StandInImageEncoder()
    logits = encoder(images).numpy() @ classifier
    return images, labels, classifier, encoder, numpy_counts(logits, labels, 5)


def examples(images, labels):
    return tf.data.Dataset.from_tensor_slices({"images": images, "labels": labels})


def check(result, reference):
    top1, top5, confusion, class_count, class_top1 = reference
    assert result["count"] == NUM_EXAMPLES
    assert result["top1_correct"] == top1 and result["top5_correct"] == top5
    assert result["top1"] == pytest.approx(top1 / NUM_EXAMPLES)
    np.testing.assert_array_equal(result["confusion"], confusion)
    np.testing.assert_array_equal(result["class_count"], class_count)
    want = np.where(class_count > 0, class_top1 / np.maximum(class_count, 1), np.nan)
    np.testing.assert_allclose(result["per_class_accuracy"], want)


def test_default_strategy_global_batches(problem):
    images, labels, classifier, encoder, reference = problem
    ds = pad_to_batches(examples(images, labels), 8)  # 23 = 8 + 8 + 7 real + 1 padding
    check(evaluate_classification(encoder, classifier, ds), reference)


def test_mirrored_4_replicas_from_function(problem, mirrored4):
    """Per-replica batches of 2 from distribute_datasets_from_function: 12 batches, 23 real rows;
    the last step's padding rows are never counted, and replica counts are SUM-reduced."""
    images, labels, classifier, encoder, reference = problem

    def dataset_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(8)
        return pad_to_batches(examples(images, labels), per_replica, ctx.num_replicas_in_sync)

    with mirrored4.scope():
        mirrored_encoder = StandInImageEncoder()
        mirrored_encoder(images[:1])
        mirrored_encoder.set_weights(encoder.get_weights())
    dist = mirrored4.distribute_datasets_from_function(dataset_fn)
    check(evaluate_classification(mirrored_encoder, classifier, dist, mirrored4,
                                  class_names=[str(i) for i in range(NUM_CLASSES)]), reference)


def test_errors(problem):
    images, labels, classifier, encoder, _ = problem
    bad = labels.copy()
    bad[4] = NUM_CLASSES
    with pytest.raises(ValueError, match=r"1 real examples have labels outside \[0, 6\)"):
        evaluate_classification(encoder, classifier, pad_to_batches(examples(images, bad), 8))
    with pytest.raises(ValueError, match="3 class names"):
        evaluate_classification(encoder, classifier, pad_to_batches(examples(images, labels), 8),
                                class_names=["a", "b", "c"])


def test_per_example_predictions_under_4_replicas(problem, mirrored4):
    """Every real example once (padding left out), with NumPy's top-5 and softmax scores."""
    images, labels, classifier, encoder, _ = problem
    ids = np.array([f"ex{i}" for i in range(NUM_EXAMPLES)])

    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices(
            {"images": images, "labels": labels, "example_id": ids})
        return pad_to_batches(ds, ctx.get_per_replica_batch_size(8), ctx.num_replicas_in_sync)

    with mirrored4.scope():
        mirrored_encoder = StandInImageEncoder()
        mirrored_encoder(images[:1])
        mirrored_encoder.set_weights(encoder.get_weights())
    result = evaluate_classification(
        mirrored_encoder, classifier, mirrored4.distribute_datasets_from_function(dataset_fn),
        mirrored4, predictions=True, logit_scale=3.0)
    p = result["predictions"]
    order = np.argsort([int(i[2:]) for i in p["example_id"]])
    assert sorted(p["example_id"]) == sorted(ids.tolist())
    logits = 3.0 * (encoder(images).numpy() @ classifier)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(p["labels"][order], labels)
    np.testing.assert_array_equal(p["top_ids"][order], np.argsort(-probs, axis=1)[:, :5])
    np.testing.assert_allclose(p["top_scores"][order], -np.sort(-probs, axis=1)[:, :5],
                               rtol=1e-5, atol=1e-6)
