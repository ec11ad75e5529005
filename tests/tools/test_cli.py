"""Every tool's start-up (basic_tf/cli.py): --help exits 0 and shows the tool's docstring;
TensorFlow's C++ start-up lines (and the cuInit error of a machine without a GPU) are hidden
unless the user sets TF_CPP_MIN_LOG_LEVEL."""
import os
import re
import subprocess
import sys

import pytest

from basic_tf import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tools/<name>.py that are absl apps ending in cli.run (saved_model_cli.py wraps TF's own CLI).
TOOLS = ["train", "evaluate", "export", "make_tfrecords", "train_tokenizer", "new_experiment",
         "plan", "serving_client", "scaling_study"]
# A C++ log line of TensorFlow/XLA: "2026-12-03 14:05:18.374319: I external/...cc:31] ..."
CPP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+\.cc:\d+\]", re.M)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=REPO, **extra)
    return env


@pytest.mark.parametrize("tool", TOOLS)
def test_help_exits_zero_and_explains_the_tool(tool):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", f"{tool}.py"), "--help"],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.lstrip().startswith(_first_docstring_line(tool)), proc.stdout[:500]
    assert "--" in proc.stdout and "Traceback" not in proc.stderr


def _first_docstring_line(tool):
    import ast

    with open(os.path.join(REPO, "tools", f"{tool}.py"), encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())).splitlines()[0]


def test_tensorflow_start_up_lines_hidden_by_default(tmp_path):
    """tools/train.py imports TensorFlow and builds a strategy before it needs the data: no C++
    log line reaches stderr (on a CPU machine TF logs an ERROR 'failed call to cuInit')."""
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--gin_file=models/tiny",
               f"--model_dir={tmp_path / 'run'}", "--gin_bindings=train.train_steps = 1"]
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          timeout=300)
    assert "Required bindings for `make_dataset`" in proc.stderr, proc.stderr[-2000:]  # got far
    assert not CPP_LOG_LINE.search(proc.stderr), CPP_LOG_LINE.findall(proc.stderr)
    assert "cuInit" not in proc.stderr


def test_user_log_level_wins(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert cli.quiet_tensorflow_logs() == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert cli.quiet_tensorflow_logs() in ("2", "3")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("2", "3")


def test_asked_for_help():
    assert cli.asked_for_help(["prog", "--model_dir=x", "--helpfull"])
    assert cli.asked_for_help(["prog", "-h"])
    assert not cli.asked_for_help(["prog", "--model_dir=x"])
    assert not cli.asked_for_help(["prog", "--", "--help"])   # after "--": an argument
