"""tools/new_experiment.py on raw sources: a class-folder tree and a CSV table are written as
shards into <out_dir>/data first (as tools/make_tfrecords.py does), then profiled; class names
that disagree between the splits are refused, naming the label."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from basic_tf import config

# Slow: tools/new_experiment.py end to end in subprocesses.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ["cat", "dog", "owl"]      # sorted: the folder source numbers folders in this order


def _image(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((24, 40), value, np.uint8), "L").save(path)   # grayscale


def _data(root, eval_class_names):
    for label, name in enumerate(CLASSES):
        for i in range(4):
            _image(os.path.join(root, "folders", name, f"{i}.png"), 60 * label + i)
    rows = ["image,caption,label"]
    for label, name in enumerate(eval_class_names):
        _image(os.path.join(root, "test", f"{name}.png"), 200 + label)
        rows.append(f"test/{name}.png,a photo of a {name}.,{label}")
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("\n".join(eval_class_names) + "\n")


def _run(root, *extra):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "new_experiment.py"),
                           f"--train={root / 'folders'}", f"--eval={root / 'test.csv'}",
                           "--label_column=label", f"--class_names_file={root / 'classes.txt'}",
                           f"--out_dir={root / 'exp'}", "--train_steps=10", *extra],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)


def test_folder_and_table_sources_become_shards_and_a_gin_file(tmp_path):
    _data(tmp_path, CLASSES)
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 12 records" in proc.stdout and "wrote 3 records" in proc.stdout, proc.stdout
    assert "L 12" in proc.stdout                      # grayscale files seen as such
    exp = tmp_path / "exp"
    assert sorted(os.listdir(exp / "data"))[0].startswith("eval-")
    assert (exp / "class_names.txt").read_text().split() == CLASSES
    gin_text = (exp / "experiment.gin").read_text()
    assert f"make_dataset.file_pattern = '{exp / 'data' / 'train-*.tfrecord'}'" in gin_text
    assert "make_dataset.image_size = 24" in gin_text     # shorter side of 24 x 40
    assert "train.train_steps = 10" in gin_text
    assert f"--tfrecords='{exp / 'data' / 'eval-*.tfrecord'}'" in proc.stdout   # shell-quoted
    config.parse([str(exp / "experiment.gin")])            # loads as a gin file
    with open(config.resolve_gin_file("tiny"), encoding="utf-8") as f:   # gin/'s layout
        assert re.findall(r"^# ---- (\w+)", gin_text, re.M) == re.findall(
            r"^# ---- (\w+)", f.read(), re.M)


def test_class_names_that_disagree_between_splits_are_refused(tmp_path):
    _data(tmp_path, ["dog", "cat", "owl"])
    proc = _run(tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]         # one line, no traceback
    assert message.startswith("basic-new-experiment: --eval=") and "Traceback" not in proc.stderr
    assert "label 0 is named 'dog'" in message and "'cat'" in message, proc.stderr[-2000:]
