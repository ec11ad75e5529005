"""A user's own data end to end, the one chain of subprocesses that trains: the README's "Your
own data" commands, run exactly as written (as subprocesses, `basic-X` as `python3 tools/X.py`)
on 10 generated classes of coloured 32x32 PNG images listed in CSV files: shards -> new
experiment -> train -> evaluate -> export, with no edits to the generated gin file. The one
addition: --train_steps=40 for new-experiment, so that training takes seconds.

On the same trained model, evaluate's other uses: class names in another order (refused, or
matched by name with --labels_by_name: the same predictions), JSONL predictions, retrieval on
template captions (ground truth by caption identity) and prompts cut at the token length."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

# Slow: six tools in subprocesses, one of them trains (40 steps), then three more evaluations.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30), "purple": (140, 30, 160), "orange": (240, 140, 20),
           "white": (240, 240, 240), "black": (15, 15, 15), "pink": (250, 150, 190),
           "brown": (120, 70, 20)}
CAPTIONS = ("a photo of a {} square.", "a {} square.", "a small {} patch.", "the colour {}.",
            "something {}.")
FAST = {"basic-new-experiment": ["--train_steps=40"]}


def readme_commands():
    """The command lines of the README section's bash block, continuations joined."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def write_my_data(root, per_class):
    """root/images/*.png, root/{train,test}.csv (image,caption,label) and root/classes.txt."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    with open(os.path.join(root, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in COLOURS))
    for split, n in per_class.items():
        rows = []
        for label, (name, rgb) in enumerate(COLOURS.items()):
            for i in range(n):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (32, 32, 3)), 0, 255)
                path = f"images/{split}_{name}_{i}.png"
                Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, path))
                caption = CAPTIONS[rng.integers(len(CAPTIONS))].format(name)
                rows.append({"image": path, "caption": caption, "label": label})
        with open(os.path.join(root, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["image", "caption", "label"])
            writer.writeheader()
            writer.writerows(rows)


def _run(tmp_path, tool, *args):
    """tools/<tool>.py in tmp_path (the README's working directory), TF_CPP_MIN_LOG_LEVEL unset
    as a user's shell has it."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool + ".py"), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README commands run in order in a fresh directory (my_data/, my_exp/); the path."""
    tmp_path = tmp_path_factory.mktemp("own_data")
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "basic-make-tfrecords", "basic-make-tfrecords", "basic-new-experiment", "basic-train",
        "basic-evaluate", "basic-export"]
    write_my_data(tmp_path / "my_data", {"train": 20, "test": 5})
    for command in commands:
        tool = command[0][len("basic-"):].replace("-", "_")
        proc = _run(tmp_path, tool, *command[1:], *FAST.get(command[0], []))
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-4000:])
        assert "cuInit" not in proc.stderr, command
    return tmp_path


def test_readme_own_data_commands_end_to_end(readme_run):
    tmp_path = readme_run
    gin_text = (tmp_path / "my_exp" / "experiment.gin").read_text()
    bindings = [line.split("#", 1)[0] for line in gin_text.splitlines()]
    assert not [b for b in bindings if "%" in b]     # values written out, no %MACROS
    assert (tmp_path / "my_exp" / "class_names.txt").read_text().split("\n")[:10] == list(COLOURS)
    with open(tmp_path / "my_exp" / "eval.json", encoding="utf-8") as f:
        result = json.load(f)["results"]["tfrecords"]
    assert result["count"] == 50
    assert result["top1"] >= 0.3, result["top1"]    # chance is 0.1; ~0.8 after 40 steps


def test_export_serves_the_evaluated_predictions(readme_run):
    """The exported model serves evaluate's per-image predictions (class order and scores)."""
    tmp_path = readme_run
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SentencePiece op of the exported graph)
    from basic_tf.data import schema, validate
    with open(tmp_path / "my_exp" / "predictions.csv", newline="", encoding="utf-8") as f:
        predicted = list(csv.DictReader(f))
    assert len(predicted) == 50
    records = {r.example_id: r for shard in schema.list_shards(
        str(tmp_path / "my_data" / "tfrecords" / "test-*.tfrecord"))
        for r in validate.read_records(shard)}
    served = tf.saved_model.load(str(tmp_path / "my_exp" / "serving" / "basic" / "1"))
    out = served.signatures["classify"](
        images=tf.constant([records[row["example_id"]].image for row in predicted]))
    for row, classes, scores in zip(predicted, out["classes"].numpy(), out["scores"].numpy()):
        k = min(len(classes), sum(1 for key in row if key.endswith("_class")))
        assert [c.decode() for c in classes[:k]] == [row[f"top{i + 1}_class"]
                                                     for i in range(k)], row["example_id"]
        np.testing.assert_allclose(scores[:k], [float(row[f"top{i + 1}_score"])
                                                for i in range(k)], rtol=1e-4, atol=1e-6)
    versions = os.listdir(tmp_path / "my_exp" / "serving" / "basic")
    assert (tmp_path / "my_exp" / "serving" / "basic" / versions[0] / "saved_model.pb").exists()


LONG = "this is a very small black and white picture taken on a rainy day of the {c}"


@pytest.fixture(scope="module")
def other_evaluations(readme_run):
    """Three more evaluations of the README's model, side by side: the class names in another
    order (refused, and matched with --labels_by_name, with JSONL predictions and retrieval on
    template-captioned shards), and prompts with a long template."""
    from basic_tf.data import sources, writer

    root = readme_run
    (root / "reversed.txt").write_text("\n".join(reversed(COLOURS)) + "\n", encoding="utf-8")
    (root / "long_prompts.txt").write_text(f"a photo of a {{c}}.\nthe {{c}}\n{LONG}\n",
                                           encoding="utf-8")
    # Retrieval shards: 4 test images of each of 3 classes captioned by 2 templates each, so
    # 24 captions but 6 distinct texts.
    for name in RETRIEVAL_CLASSES:
        folder = root / "retrieval_images" / name
        folder.mkdir(parents=True)
        for i in range(4):
            os.symlink(root / "my_data" / "images" / f"test_{name}_{i}.png", folder / f"{i}.png")
    writer.write_tfrecords(sources.from_folder(str(root / "retrieval_images"),
                                               ["a photo of a {}.", "a {}."]),
                           str(root / "retrieval" / "r"), show_progress=False)
    common = ["--gin_file=my_exp/experiment.gin", "--model_dir=my_exp/model",
              "--tfrecords=my_data/tfrecords/test-*.tfrecord"]
    runs = {
        "refused": common + ["--class_names=reversed.txt", "--templates=my_exp/templates.txt"],
        "by_name": common + ["--class_names=reversed.txt", "--templates=my_exp/templates.txt",
                             "--labels_by_name", "--predictions=by_name.jsonl",
                             "--retrieval_tfrecords=retrieval/r-*.tfrecord",
                             "--out=by_name.json"],
        "long": common + ["--class_names=my_exp/class_names.txt",
                          "--templates=long_prompts.txt", "--out=long.json"],
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(_run, root, "evaluate", *args)
                   for name, args in runs.items()}
        procs = {name: f.result() for name, f in futures.items()}
    for name in ("by_name", "long"):
        assert procs[name].returncode == 0, (name, procs[name].stderr[-3000:])
    return procs


RETRIEVAL_CLASSES = ["red", "green", "blue"]


def _test_records(root):
    from basic_tf.data import schema, validate
    return {r.example_id: r for shard in schema.list_shards(
        str(root / "my_data" / "tfrecords" / "test-*.tfrecord"))
        for r in validate.read_records(shard)}


def test_class_names_in_another_order_are_refused(other_evaluations):
    proc = other_evaluations["refused"]
    assert proc.returncode != 0
    assert "--class_names: class 0 is 'brown' but the records" in proc.stderr, proc.stderr[-2000:]
    assert "name label 0 'red'" in proc.stderr


def test_labels_by_name_gives_the_same_predictions_as_jsonl(readme_run, other_evaluations):
    """--labels_by_name with the names reversed: per image the README evaluation's classes and
    scores; the JSONL rows carry each record's label, name and sorted scores."""
    root = readme_run
    rows = [json.loads(line) for line in
            (root / "by_name.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(root / "my_exp" / "predictions.csv", newline="", encoding="utf-8") as f:
        readme = {row["example_id"]: row for row in csv.DictReader(f)}
    records = _test_records(root)
    assert sorted(row["example_id"] for row in rows) == sorted(records) == sorted(readme)
    for row in rows:
        record, other = records[row["example_id"]], readme[row["example_id"]]
        # Labels mapped by name: the index of the record's class in the list given (reversed).
        assert (row["label"], row["label_name"]) == (
            list(reversed(COLOURS)).index(record.label_name), record.label_name)
        assert other["label_name"] == row["label_name"]
        k = len(row["classes"])
        assert len(set(row["classes"])) == k and set(row["classes"]) <= set(COLOURS)
        assert row["scores"] == sorted(row["scores"], reverse=True)
        assert sum(row["scores"]) <= 1.0 + 1e-5
        assert [other[f"top{i}_class"] for i in range(1, k + 1)] == row["classes"]
        np.testing.assert_allclose([float(other[f"top{i}_score"]) for i in range(1, k + 1)],
                                   row["scores"], rtol=1e-5, atol=1e-6)
    results = json.load(open(root / "by_name.json"))["results"]
    correct = sum(row["classes"][0] == row["label_name"] for row in rows)
    assert correct == results["tfrecords"]["top1_correct"]


def test_retrieval_on_template_captions_counts_caption_identity(readme_run, other_evaluations):
    """Folder captions repeat (2 templates x 3 classes = 6 texts for 12 images): the report
    says so, and R@K uses caption identity."""
    results = json.load(open(readme_run / "by_name.json"))["results"]
    retrieval = results["retrieval"]
    assert (retrieval["num_captions"], retrieval["num_distinct_captions"]) == (24, 6)
    assert retrieval["ground_truth"].startswith("caption identity")
    proc = other_evaluations["by_name"]
    assert "ground truth by caption identity: 6 distinct captions of 24" in (
        proc.stdout + proc.stderr)
    for direction in ("image_to_text", "text_to_image"):
        assert retrieval[direction]["10"] == 1.0   # 6 texts / 3 classes: always within 10


def test_prompts_cut_at_the_token_length_are_reported(readme_run, other_evaluations):
    """The long template (mostly unseen words: single letters) loses the class name in each of
    the 10 classes' prompts; the other two templates fit."""
    check = json.load(open(readme_run / "long.json"))["results"]["tfrecords"]["prompt_check"]
    gin_text = (readme_run / "my_exp" / "experiment.gin").read_text()
    seq_len = int(re.search(r"^make_dataset\.seq_len = (\d+)", gin_text, re.M).group(1))
    assert (check["seq_len"], check["prompts"], check["cut"], check["name_cut"]) == (
        seq_len, 30, 10, 10)
    assert check["classes_without_name"] == [] and check["unknown_classes"] == {}
    proc = other_evaluations["long"]
    assert (f"(prompts: 10 of 30 prompts are longer than seq_len={seq_len} and were cut"
            in proc.stdout + proc.stderr)
