"""A user's own data, end to end through the documented commands: a class-folder image set, a gin
file copied from gin/demo.gin with only its data paths added, then tools/train.py,
tools/evaluate.py and tools/export.py with no extra flags (training runs 2 steps, 1 of warm-up: the test is
about plumbing, labels and equal numbers, not accuracy)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import schema, sources, writer
from basic_tf.data.tokenizer import train_sentencepiece

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATURAL = ["trouser", "bag", "ankle boot"]      # the user's order; folders sort differently
PER_CLASS = 4


def _run(tool, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args],
                          capture_output=True, text=True, timeout=900, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Folder tree -> shards (+ class_names.json), a tokenizer, the copied gin file, weights."""
    root = tmp_path_factory.mktemp("own_data")
    rng = np.random.default_rng(3)
    for name in NATURAL:
        folder = root / "images" / name.replace(" ", "_")
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):  # grayscale 28x28, as Fashion-MNIST
            pixels = rng.integers(0, 256, [28, 28], dtype=np.uint8)
            (folder / f"{i}.png").write_bytes(sources.encode_image(pixels))
    prefix = str(root / "data" / "train")
    summary = writer.write_tfrecords(
        sources.from_folder(str(root / "images"), ["a photo of a {}.", "a {}."]), prefix,
        show_progress=False)
    captions = [c for n in NATURAL for c in (f"a photo of a {n}.", f"a {n}.", f"the {n}")] * 8
    spm = train_sentencepiece(captions, str(root / "data" / "sp"), vocab_size=50)
    demo = open(os.path.join(REPO, "gin", "demo.gin"), encoding="utf-8").read()
    gin_file = root / "mine.gin"
    gin_file.write_text(demo + f"\nmake_dataset.file_pattern = '{prefix}-*.tfrecord'\n"
                        f"make_dataset.tokenizer_path = '{spm}'\n", encoding="utf-8")
    (root / "natural.txt").write_text("\n".join(NATURAL) + "\n", encoding="utf-8")
    long = "this is a very small black and white picture taken on a rainy day of the {c}"
    (root / "prompts.txt").write_text(f"a photo of a {{c}}.\nthe {{c}}\n{long}\n",
                                      encoding="utf-8")

    # Trained with the documented command (2 steps instead of the demo's 300: plumbing, not
    # accuracy); evaluation and export read its model_dir.
    weights = str(root / "model")
    proc = _run("train.py", f"--gin_file={gin_file}", f"--model_dir={weights}",
                "--gin_bindings=TRAIN_STEPS = 2", "--gin_bindings=WARMUP_STEPS = 1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "gin": str(gin_file), "shards": f"{prefix}-*.tfrecord",
            "names_file": prefix + writer.CLASS_NAMES_SUFFIX, "weights": weights,
            "written": summary.written}


@pytest.fixture(scope="module")
def evaluated(own):
    """The README's evaluate command on the copied gin file: classification with the written
    class-name list, retrieval on the same shards, per-image predictions as JSONL."""
    out, predictions = own["root"] / "eval.json", own["root"] / "pred.jsonl"
    proc = _run("evaluate.py", f"--gin_file={own['gin']}", f"--checkpoint={own['weights']}",
                f"--tfrecords={own['shards']}", f"--class_names={own['names_file']}",
                f"--templates={own['root'] / 'prompts.txt'}",
                f"--retrieval_tfrecords={own['shards']}", f"--predictions={predictions}",
                f"--out={out}", "--batch_size=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    return {"proc": proc, "results": json.load(open(out))["results"], "rows": rows}


def test_folder_labels_are_sorted_and_listed(own):
    assert json.load(open(own["names_file"])) == sorted(NATURAL)  # ankle boot, bag, trouser


def test_demo_copy_evaluates_with_per_image_predictions(own, evaluated):
    results = evaluated["results"]
    assert results["tfrecords"]["count"] == own["written"] == 3 * PER_CLASS
    assert results["tfrecords"]["class_names"] == sorted(NATURAL)
    rows = evaluated["rows"]
    records = {r.example_id: r for r in _records(own["shards"])}
    assert sorted(row["example_id"] for row in rows) == sorted(records)
    for row in rows:
        record = records[row["example_id"]]
        assert (row["label"], row["label_name"]) == (record.label, record.label_name)
        assert sorted(row["classes"]) == sorted(NATURAL)   # top-3 of 3 classes
        assert row["scores"] == sorted(row["scores"], reverse=True)
        assert sum(row["scores"]) == pytest.approx(1.0, abs=1e-5)
    correct = sum(row["classes"][0] == row["label_name"] for row in rows)
    assert correct == results["tfrecords"]["top1_correct"]


def test_prompts_cut_at_the_token_length_are_reported(evaluated):
    """The long template (mostly unseen words: single letters) loses the class name."""
    check = evaluated["results"]["tfrecords"]["prompt_check"]
    assert (check["seq_len"], check["prompts"], check["cut"], check["name_cut"]) == (24, 9, 3, 3)
    assert check["classes_without_name"] == [] and check["unknown_classes"] == {}
    assert "(prompts: 3 of 9 prompts are longer than seq_len=24 and were cut" in (
        evaluated["proc"].stdout)


def test_retrieval_on_template_captions_counts_caption_identity(own, evaluated):
    """Folder captions repeat (2 templates x 3 classes = 6 texts for 12 images): the report
    says so, and R@K uses caption identity."""
    retrieval = evaluated["results"]["retrieval"]
    assert (retrieval["num_captions"], retrieval["num_distinct_captions"]) == (24, 6)
    assert retrieval["ground_truth"].startswith("caption identity")
    assert "ground truth by caption identity: 6 distinct captions of 24" in (
        evaluated["proc"].stdout)
    for direction in ("image_to_text", "text_to_image"):
        assert retrieval[direction]["10"] == 1.0   # 6 texts / 3 classes: always within 10


def test_class_names_in_another_order_are_refused(own):
    proc = _run("evaluate.py", f"--gin_file={own['gin']}", f"--checkpoint={own['weights']}",
                f"--tfrecords={own['shards']}", f"--class_names={own['root'] / 'natural.txt'}",
                f"--templates={own['root'] / 'prompts.txt'}")
    assert proc.returncode != 0
    assert "--class_names: class 0 is 'trouser' but the records" in proc.stderr
    assert "name label 0 'ankle boot'" in proc.stderr


def test_labels_by_name_gives_the_same_predictions(own, evaluated):
    predictions = own["root"] / "pred_by_name.csv"
    proc = _run("evaluate.py", f"--gin_file={own['gin']}", f"--checkpoint={own['weights']}",
                f"--tfrecords={own['shards']}", f"--class_names={own['root'] / 'natural.txt'}",
                f"--templates={own['root'] / 'prompts.txt'}", "--labels_by_name",
                f"--predictions={predictions}", "--batch_size=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(predictions, newline="", encoding="utf-8") as f:
        by_name = {row["example_id"]: row for row in csv.DictReader(f)}
    for row in evaluated["rows"]:
        other = by_name[row["example_id"]]
        assert other["label_name"] == row["label_name"]
        assert [other[f"top{i}_class"] for i in (1, 2, 3)] == row["classes"]
        np.testing.assert_allclose([float(other[f"top{i}_score"]) for i in (1, 2, 3)],
                                   row["scores"], rtol=1e-5, atol=1e-6)


def test_demo_copy_exports_and_serves_the_evaluated_predictions(own, evaluated):
    import tensorflow_text  # noqa: F401  (the SentencePiece op of the exported graph)

    # (names in another order are refused as in evaluation: test_labels.py, names_for_export)
    export_dir = own["root"] / "serve"
    proc = _run("export.py", f"--gin_file={own['gin']}", f"--checkpoint={own['weights']}",
                f"--export_dir={export_dir}", f"--class_names={own['names_file']}",
                f"--templates={own['root'] / 'prompts.txt'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = tf.saved_model.load(str(export_dir / "basic" / "1")).signatures["classify"]
    records = {r.example_id: r for r in _records(own["shards"])}
    ids = [row["example_id"] for row in evaluated["rows"]]
    out = served(images=tf.constant([records[i].image for i in ids]))
    classes = [[c.decode() for c in row] for row in out["classes"].numpy()]
    for row, served_classes, served_scores in zip(evaluated["rows"], classes,
                                                  out["scores"].numpy()):
        assert served_classes == row["classes"], row["example_id"]
        np.testing.assert_allclose(served_scores, row["scores"], rtol=1e-4, atol=1e-6)


def _records(pattern):
    from basic_tf.data import validate
    return [r for shard in schema.list_shards(pattern) for r in validate.read_records(shard)]
