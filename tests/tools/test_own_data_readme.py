"""The README's "Your own data" commands, run exactly as written (as subprocesses, `basic-X` as
`python3 tools/X.py`) on 10 generated classes of coloured 32x32 PNG images listed in CSV files:
shards -> new experiment -> train -> evaluate -> export, with no edits to the generated gin file.
The one addition: --train_steps=40 for new-experiment, so that training takes seconds."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
from PIL import Image

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


def test_readme_own_data_commands_end_to_end(tmp_path):
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "basic-make-tfrecords", "basic-make-tfrecords", "basic-new-experiment", "basic-train",
        "basic-evaluate", "basic-export"]
    write_my_data(tmp_path / "my_data", {"train": 20, "test": 5})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    for command in commands:
        tool = os.path.join(REPO, "tools", command[0][len("basic-"):].replace("-", "_") + ".py")
        proc = subprocess.run([sys.executable, tool, *command[1:], *FAST.get(command[0], [])],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-4000:])
        assert "cuInit" not in proc.stderr, command

    gin_text = (tmp_path / "my_exp" / "experiment.gin").read_text()
    bindings = [line.split("#", 1)[0] for line in gin_text.splitlines()]
    assert not [b for b in bindings if "%" in b]     # values written out, no %MACROS
    assert (tmp_path / "my_exp" / "class_names.txt").read_text().split("\n")[:10] == list(COLOURS)
    with open(tmp_path / "my_exp" / "eval.json", encoding="utf-8") as f:
        result = json.load(f)["results"]["tfrecords"]
    assert result["count"] == 50
    assert result["top1"] >= 0.3, result["top1"]    # chance is 0.1; ~0.8 after 40 steps

    # The exported model serves evaluate's per-image predictions (class order and scores).
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
