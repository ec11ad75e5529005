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


LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3]
BUCKETS = [0, 1, 2, 3, 0, 1, 2, 3, 3, 3, 0]


def _toy_task_and_model():
    """A toy model whose classifier is the identity (class name 'k' -> one-hot k) and whose
    images are one-hot buckets: 8 of 11 right at top-1 (rows 8-10 are drawn wrong)."""
    from basic_tf.data.pipeline import pad_to_batches
    from zeroshot_helpers import bucket_encoder, bucket_image

    labels, buckets = LABELS, BUCKETS
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
    return task, Toy(), tokenizer


def test_periodic_eval_fn_hand_counts():
    task, model, tokenizer = _toy_task_and_model()
    scalars = run.periodic_eval_fn(tokenizer, [task])(model)
    assert scalars == {"zeroshot/toy/top1": pytest.approx(8 / 11), "zeroshot/toy/top5": 1.0}


@pytest.mark.parametrize("unwritable", ["png", "json"])
def test_an_unwritable_output_is_named_and_the_others_are_written(tmp_path, capsys, unwritable):
    """Injected fault: one output path cannot be written (here a folder stands in its place, as a
    full disk would refuse it). The table is printed, the JSON is written first, every other file
    is still written whole, and the error names the file that failed (the old code wrote the PNG
    before the JSON and lost every result with an error naming no file)."""
    task, model, tokenizer = _toy_task_and_model()
    out = tmp_path / "eval" / "r.json"
    blocked = {"png": tmp_path / "eval" / "r.toy.confusion.png", "json": out}[unwritable]
    blocked.mkdir(parents=True)
    with pytest.raises(OSError, match=f"--out: could not write {blocked}"):
        run.run_and_report(model, tokenizer, [task], out_path=str(out))
    assert "72.73%" in capsys.readouterr().out          # 8 / 11: the table was printed
    assert (tmp_path / "eval" / "r.txt").read_text().count("72.73%") == 1
    if unwritable == "png":
        assert json.load(open(out))["results"]["toy"]["top1"] == pytest.approx(8 / 11)
    else:
        assert (tmp_path / "eval" / "r.toy.confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p.name for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")]
