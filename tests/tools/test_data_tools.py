"""tools/make_tfrecords.py and tools/train_tokenizer.py run as a user runs them (subprocesses;
their --help: test_cli.py)."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from basic_tf.data import schema, validate

# Slow: each test runs the tools end to end in subprocesses.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tool(name, *args):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", name), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_folder_to_shards_to_tokenizer_then_validate(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("red_fox", "owl"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(5):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
            (tmp_path / "img" / cls / f"{i}.png").write_bytes(buf.getvalue())
    (tmp_path / "img" / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    prefix = str(tmp_path / "out" / "train")
    out = run_tool("make_tfrecords.py", "--source=folder", f"--input={tmp_path / 'img'}",
                   f"--output_prefix={prefix}", "--max_shard_mb=0.002",
                   "--template=a photo of a {}.", "--template={} in the wild")
    assert out.returncode == 0, out.stderr
    assert "wrote 10 records in" in out.stdout and "1 bad image" in out.stdout, out.stdout
    shards = sorted(p for p in os.listdir(tmp_path / "out") if p.endswith(".tfrecord"))
    assert len(shards) > 1  # 2 KiB shards

    out = run_tool("train_tokenizer.py", f"--shards={prefix}-*", "--vocab_size=20",
                   f"--model_prefix={tmp_path / 'sp'}")
    assert out.returncode == 0, out.stderr
    assert os.path.isfile(tmp_path / "sp.model") and "vocabulary" in out.stdout

    report = validate.validate_shards(schema.list_shards(f"{prefix}-*"))
    assert (report.records, report.ok, report.problems) == (10, 10, [])
    with open(tmp_path / "out" / shards[0], "r+b") as f:  # cut the first shard short
        f.truncate(os.path.getsize(tmp_path / "out" / shards[0]) - 30)
    out = run_tool("make_tfrecords.py", f"--validate={prefix}-*")
    assert out.returncode == 1 and "truncated" in out.stdout and "count_mismatch" in out.stdout


def test_missing_image_is_skipped_with_its_row_and_strict_aborts_without_tmp(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    (tmp_path / "t.csv").write_text("image,caption\na.png,a black square\ngone.png,lost\n")
    prefix = str(tmp_path / "out" / "train")
    args = ("make_tfrecords.py", "--source=table", f"--input={tmp_path / 't.csv'}",
            f"--output_prefix={prefix}")
    out = run_tool(*args)
    assert out.returncode == 0, out.stderr
    assert "wrote 1 records" in out.stdout and "1 missing/unreadable image file" in out.stdout
    assert "t.csv row 2" in out.stderr and "gone.png" in out.stderr
    os.remove(prefix + "-00000-of-00001.tfrecord")
    out = run_tool(*args, "--strict")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-2].startswith(f"{tmp_path / 't.csv'} row 2: cannot "
                                                          "read image"), out.stderr
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith((".tmp", ".tfrecord"))]


def test_table_path_outside_its_folder_is_refused_unless_allowed(tmp_path):
    """Injected fault (issue 24 item 5): a CSV naming ../ an image beside its folder."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "t.csv").write_text("image,caption\n../a.png,a black square\n")
    prefix = str(tmp_path / "out" / "train")
    args = ("make_tfrecords.py", "--source=table", f"--input={tmp_path / 'csv' / 't.csv'}",
            f"--output_prefix={prefix}")
    out = run_tool(*args)
    assert out.returncode == 1, out.stderr
    assert (f"{tmp_path / 'csv' / 't.csv'} row 1: column 'image' '../a.png' is outside the "
            f"table's folder {tmp_path / 'csv'}") in out.stderr
    assert "--allow_outside_paths" in out.stderr
    assert not os.path.exists(prefix + "-00000-of-00001.tfrecord")
    out = run_tool(*args, "--allow_outside_paths")
    assert out.returncode == 0 and "wrote 1 records" in out.stdout, out.stderr
