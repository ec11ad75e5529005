"""Scalar summaries and the report files."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.zeroshot import report, run


RESULTS = {
    "cifar10": {"count": 3, "top1": 2 / 3, "top5": 1.0, "k": 5, "num_classes": 3,
                "class_names": ["a", "b", "c"], "per_class_accuracy": [1.0, 0.0, float("nan")],
                "confusion": [[1, 0, 0], [0, 0, 1], [0, 0, 0]], "skipped_records": 2},
    "coco": {"image_to_text": {1: 0.25, 5: 0.5}, "text_to_image": {1: 0.125, 5: 0.75},
             "num_images": 4, "num_captions": 8},
}


def test_scalar_summary():
    assert run.scalar_summary(RESULTS) == {
        "zeroshot/cifar10/top1": 2 / 3, "zeroshot/cifar10/top5": 1.0,
        "retrieval/coco/image_to_text_r1": 0.25, "retrieval/coco/image_to_text_r5": 0.5,
        "retrieval/coco/text_to_image_r1": 0.125, "retrieval/coco/text_to_image_r5": 0.75}


def test_table_json_and_png(tmp_path):
    table = report.format_table(RESULTS)
    assert "66.67%" in table and "100.00%" in table and "2 unreadable records skipped" in table
    assert "12.5%" in table and "75.0%" in table
    path = str(tmp_path / "out" / "r.json")
    report.write_json(RESULTS, path, {"checkpoint": "x"})
    loaded = json.load(open(path))
    assert loaded["metadata"] == {"checkpoint": "x"}
    assert loaded["results"]["cifar10"]["per_class_accuracy"] == [1.0, 0.0, None]  # NaN -> null
    assert loaded["results"]["coco"]["text_to_image"]["5"] == 0.75
    png = str(tmp_path / "c.png")
    report.save_confusion_png(RESULTS["cifar10"]["confusion"], ["a", "b", "c"], png)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at most 2 classes"):
        report.save_confusion_png(np.eye(3), None, png, max_classes=2)
    assert not math.isnan(loaded["results"]["cifar10"]["top1"])


def test_periodic_eval_fn_hand_counts():
    """A toy model whose classifier is the identity (class name 'k' -> one-hot k) and whose
    images are one-hot buckets: 8 of 11 right at top-1 (rows 8-10 are drawn wrong)."""
    from basic_tf.data.pipeline import pad_to_batches
    from zeroshot_helpers import bucket_encoder, bucket_image

    labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3]
    buckets = [0, 1, 2, 3, 0, 1, 2, 3, 3, 3, 0]
    images = np.stack([bucket_image(b, 4, 6) / 255.0 for b in buckets]).astype(np.float32)

    class Toy:
        encode_image = staticmethod(bucket_encoder(4))

        @staticmethod
        def encode_text(ids):
            return tf.one_hot(ids[:, 0], 4)

    def tokenizer(strings):  # "3" -> [[3]]; "" (the classifier's batch padding) -> [[0]]
        return tf.strings.to_number(tf.where(strings == "", "0", strings), tf.int32)[:, None]

    def dataset_fn(ctx=None):
        ds = tf.data.Dataset.from_tensor_slices({"images": images, "labels": labels})
        return pad_to_batches(ds, 4)

    task = run.ClassificationTask("toy", dataset_fn, ["0", "1", "2", "3"], ["{c}"])
    scalars = run.periodic_eval_fn(tokenizer, [task])(Toy())
    assert scalars == {"zeroshot/toy/top1": pytest.approx(8 / 11), "zeroshot/toy/top5": 1.0}
