"""Every tool's start-up (basic_tf/cli.py): --help exits 0 and shows the tool's docstring;
TensorFlow's C++ start-up lines (and the cuInit error of a machine without a GPU) are hidden
unless the user sets TF_CPP_MIN_LOG_LEVEL."""
import ast
import os
import re
import subprocess
import sys

import pytest

from basic_tf import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The console scripts of setup.py (basic-<name> runs tools/<name>.py; basic-demo runs
# basic_tf.demo), and the tools/ programs that are not installed as commands.
with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as _f:
    COMMANDS = next(ast.literal_eval(node.value) for node in ast.parse(_f.read()).body
                    if isinstance(node, ast.Assign) and node.targets[0].id == "COMMANDS")
TOOLS = COMMANDS + ["scaling_study"]
# What each --help must name beyond the tool's docstring (the tool's own flags; the shared gin
# flags of cli.py for the programs that read gin).
GIN = ["--gin_file", "--gin_bindings"]
HELP_WORDS = {
    "train": GIN + ["--model_dir", "--strategy", "resumes", "--allow_unverified"],
    "evaluate": GIN + ["--tfds_name", "--tfrecords", "--retrieval_tfrecords", "--checkpoint",
                       "--out", "--allow_unverified"],
    "export": GIN + ["--checkpoint", "--class_names", "--templates", "--export_dir",
                     "models.config", "Example", "--allow_unverified"],
    "make_tfrecords": ["--source", "--output_prefix", "--validate", "--max_shard_mb"],
    "train_tokenizer": ["--vocab_size", "--shards"],
    "new_experiment": ["--train", "--out_dir"],
    "plan": GIN + ["--global_batch", "--mesh", "--device_memory_gb", "--replicas", "--peak_tflops",
             "--assumed_mfu"],
    "serving_client": ["--server", "--protocol", "--signature", "classify_with_labels",
                       "Example"],
    "scaling_study": GIN,
    "demo": GIN + ["--out"],
}
# Programs whose --help must not import TensorFlow (nothing on stderr mentions it).
WITHOUT_TENSORFLOW = ("export", "serving_client")
# A C++ log line of TensorFlow/XLA: "2026-12-03 14:05:18.374319: I external/...cc:31] ..."
CPP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+\.cc:\d+\]", re.M)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=REPO, **extra)
    return env


def _help_command(tool):
    if tool == "demo":   # basic-demo: basic_tf.demo.console_main, docstring of basic_tf/demo.py
        return [sys.executable, "-c", "from basic_tf.demo import console_main; console_main()"]
    return [sys.executable, os.path.join(REPO, "tools", f"{tool}.py")]


@pytest.mark.parametrize("tool", TOOLS + ["demo"])
def test_help_exits_zero_and_explains_the_tool(tool):
    """The one --help test: every program of setup.py (and the other tools/), status 0, its
    docstring first, its flags named, no traceback and no TensorFlow C++ line. (It replaces
    the copies that were in test_export_tools, test_resume_kill, test_planner,
    test_evaluate_tool and test_data_tools.)"""
    assert set(HELP_WORDS) == set(TOOLS + ["demo"])   # a new command gets its words here
    proc = subprocess.run(_help_command(tool) + ["--help"], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.lstrip().startswith(_first_docstring_line(tool)), proc.stdout[:500]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for word in HELP_WORDS[tool]:
        assert word in proc.stdout, (word, proc.stdout[-3000:])
    assert not CPP_LOG_LINE.search(proc.stderr), CPP_LOG_LINE.findall(proc.stderr)
    if tool in WITHOUT_TENSORFLOW:
        assert "tensorflow" not in proc.stderr.lower(), proc.stderr[-2000:]


def _first_docstring_line(tool):
    path = (os.path.join(REPO, "basic_tf", "demo.py") if tool == "demo"
            else os.path.join(REPO, "tools", f"{tool}.py"))
    with open(path, encoding="utf-8") as f:
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


def test_shared_flags_are_defined_once_and_read_back():
    from absl import app, flags
    fv = flags.FlagValues()
    cli.define_gin_flags(["tiny"], flag_values=fv)
    cli.define_strategy_flags(flag_values=fv)
    cli.define_trained_model_flags(flag_values=fv)
    cli.define_class_flags(flag_values=fv)
    flags.DEFINE_string("model_dir", None, "", flag_values=fv)
    fv(["prog", "--gin_bindings=A = 1", "--gin_bindings=B = 2", "--model_dir=/m"])
    assert (fv.gin_file, fv.gin_bindings, fv.strategy) == (["tiny"], ["A = 1", "B = 2"],
                                                           "default")
    assert cli.checkpoint_from_flags("model_dir", flag_values=fv) == ("/m", "--model_dir")
    fv["checkpoint"].parse("/m/ckpt-3")   # --checkpoint wins over --model_dir
    assert cli.checkpoint_from_flags("model_dir", flag_values=fv) == ("/m/ckpt-3", "--checkpoint")
    fv.unparse_flags()
    fv(["prog"])
    with pytest.raises(app.UsageError, match=r"^give --checkpoint or --model_dir \(or "):
        cli.checkpoint_from_flags("model_dir", flag_values=fv)
    fv(["prog", "--untrained"])
    assert cli.checkpoint_from_flags(flag_values=fv) == (None, "--untrained")
    with pytest.raises(flags.UnrecognizedFlagError, match="gin_param"):  # one name: gin_bindings
        fv(["prog", "--gin_param=A = 1"])


def test_gin_and_strategy_flags_are_defined_only_in_cli():
    """Each program calls cli.define_*_flags; none defines its own copy (nor --gin_param)."""
    shared = re.compile(r"DEFINE_\w+\(\s*\"(gin_file|gin_bindings|gin_param|strategy|tpu)\"")
    programs = [os.path.join(REPO, "tools", f"{tool}.py") for tool in TOOLS]
    programs.append(os.path.join(REPO, "basic_tf", "demo.py"))
    for path in programs:
        with open(path, encoding="utf-8") as f:
            assert not shared.search(f.read()), path
