"""The README's "Web-scale data" commands, run as written (`basic-X` as `python3 tools/X.py`) on
generated webdataset tars (mixed JPEG/PNG/WebP; faults are tested in
tests/data/test_webdataset.py) and img2dataset-layout TFRecords (metadata columns of flipping
type). The one addition: --train_steps for new-experiment, so that training takes seconds."""
import os
import re
import shlex
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
FAST = {"basic-new-experiment": ["--train_steps=6", "--max_batch=8"]}


def readme_commands():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("\n## Web-scale data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.slow
def test_readme_web_data_commands_end_to_end(tmp_path):
    from web_helpers import (FORMATS, img2dataset_example, write_img2dataset_shard,
                             write_tars)

    write_tars(str(tmp_path / "shards"), 3, 24)
    os.makedirs(tmp_path / "i2d")
    for s in range(2):
        write_img2dataset_shard(str(tmp_path / "i2d" / f"{s:05d}.tfrecord"), [
            img2dataset_example(24 * s + j, FORMATS[j % 4]) for j in range(24)])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    commands = readme_commands()
    assert [c[0] for c in commands] == [
        "basic-make-tfrecords", "basic-new-experiment", "basic-train", "basic-evaluate",
        "basic-new-experiment", "basic-train"]
    for command in commands:
        tool = os.path.join(REPO, "tools", command[0][len("basic-"):].replace("-", "_") + ".py")
        proc = subprocess.run([sys.executable, tool, *command[1:], *FAST.get(command[0], [])],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-4000:])
    gin_text = (tmp_path / "i2d_exp" / "experiment.gin").read_text()
    assert "make_dataset.record_format = 'img2dataset'" in gin_text
    assert (tmp_path / "web_exp" / "eval.json").exists()
    assert os.listdir(tmp_path / "i2d_exp" / "model")
