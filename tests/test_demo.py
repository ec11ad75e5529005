"""basic-demo end to end on a reduced run (gin/demo.gin with small bindings): the command prints
one line per phase and per progress step and no warning, every phase runs, report.json has its
fields, the export classifies like the in-process evaluation, a second run in the same directory
resumes instead of retraining, and missing data gives the install command.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, demo
from basic_tf.data import fashion_mnist

TRAIN_STEPS = 4
NUM_EVAL = 64
# Few images and steps, one small block per tower: the phases, not the accuracy, are tested.
SMALL = [
    "run_demo.num_train_images = 256",
    f"run_demo.num_eval_images = {NUM_EVAL}",
    "run_demo.eval_batch_size = 32",
    f"TRAIN_STEPS = {TRAIN_STEPS}",
    "WARMUP_STEPS = 1",
    "BATCH = 32",
    "train.steps_per_loop = 2",
    "train.checkpoint_interval = 2",
    "make_dataset.shuffle_buffer = 64",
    "coatnet_config.stages = [('C', 1, 16, 2), ('T', 1, 32, 2)]",
    "text_tower_config.depth = 1",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(not fashion_mnist.available(),
                                reason="Debian package dataset-fashion-mnist not installed")


def demo_run(test):
    """The tests of the two demo runs: slow (every phase for real, the first run as the
    `basic-demo` command in a subprocess), and only with the data installed."""
    return pytest.mark.slow(needs_data(test))


def run_command(out):
    """`basic-demo --out OUT` with the SMALL bindings, as a user runs it (TF_CPP_MIN_LOG_LEVEL
    unset: the command chooses it); the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, "-c", "from basic_tf.demo import console_main; console_main()",
         f"--out={out}"] + [f"--gin_bindings={b}" for b in SMALL],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo run twice in one directory, first as the command, then in this process:
    (first report, second report, out dir, shard mtimes, the first run's CompletedProcess)."""
    out = str(tmp_path_factory.mktemp("demo"))
    proc = run_command(out)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        first = json.load(f)
    shard_times = {p: os.path.getmtime(p) for p in first_shards(out)}
    config.parse(["demo"], SMALL)
    second = demo.run_demo(out)
    return first, second, out, shard_times, proc


def first_shards(out):
    return sorted(os.path.join(out, "data", f) for f in os.listdir(os.path.join(out, "data"))
                  if f.endswith(".tfrecord"))


def _lines(proc):
    return (proc.stdout + proc.stderr).splitlines()


@demo_run
def test_command_prints_no_warning_and_one_line_per_phase_and_progress_step(runs):
    """No warning about its own prompts (seq_len fits them), no TensorFlow C++ start-up line
    ("All log messages before absl::InitializeLog()", "loop_optimizer.cc ..."), no Python
    warning, no INFO line of TensorFlow's internals; each phase announced and closed once; one
    progress line per logged step."""
    proc = runs[4]
    lines = _lines(proc)
    warnings = [line for line in lines if re.search(
        r"warn|absl::InitializeLog|\.cc:\d+\]|^[WEF]\d{4} |were cut|lost \(part of\)|cuInit",
        line, re.I)]
    assert not warnings, warnings
    for k, name in enumerate(demo.PHASES, 1):
        n = len(demo.PHASES)
        assert sum(f"[basic-demo] phase {k}/{n}: " in line for line in lines) == 1, (name, lines)
        assert sum(f"[basic-demo] phase {k}/{n} done in " in line for line in lines) == 1, name
    # Logged lines come from basic_tf (and orbit's controller), not TensorFlow's internals.
    ours = {os.path.splitext(f)[0] for _, _, files in os.walk(os.path.join(REPO, "basic_tf"))
            for f in files if f.endswith(".py")} | {"controller"}
    logged = {m.group(1) for line in lines
              for m in [re.match(r"^[IWEF]\d{4} [\d:.]+ +\d+ (\w+)\.py:\d+\]", line)] if m}
    assert logged <= ours, (logged - ours, lines)
    progress = [int(m.group(1)) for line in lines
                for m in [re.search(rf"step (\d+)/{TRAIN_STEPS} \(", line)] if m]
    assert progress == sorted(set(progress)) and progress[-1] == TRAIN_STEPS, lines


@demo_run
def test_report_has_every_phase_and_field(runs):
    first, second, out, _, _ = runs
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f) == json.loads(json.dumps(second))   # the latest run's report
    assert set(first["phase_seconds"]) == set(demo.PHASES)
    assert all(isinstance(v, float) and v >= 0 for v in first["phase_seconds"].values())
    assert first["seconds"] >= sum(first["phase_seconds"].values()) - 0.05  # each rounded
    for key in ("zero_shot_top1", "zero_shot_top5"):
        assert isinstance(first[key], float) and 0.0 <= first[key] <= 1.0
    assert first["zero_shot_top5"] >= first["zero_shot_top1"]
    assert first["eval_examples"] == NUM_EVAL
    assert list(first["per_class"]) == first["class_names"] and len(first["per_class"]) == 10
    assert first["train"] == dict(first["train"], start_step=0, final_step=TRAIN_STEPS,
                                  steps_run=TRAIN_STEPS, global_batch_size=32)
    assert first["train"]["checkpoint"].endswith(f"ckpt-{TRAIN_STEPS}")
    assert first["train"]["num_micro_batches"] >= 2   # BASIC accumulation is on in demo.gin
    # The zero-shot prompts are not training captions.
    train_captions = {t.replace("{}", "{c}") for t in first["train_templates"]}
    assert not train_captions & set(first["eval_templates"])


@demo_run
def test_export_classifies_like_the_evaluation(runs):
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the export uses)
    from basic_tf.data import schema

    first, _, out, _, _ = runs
    assert os.path.isfile(os.path.join(first["export_dir"], "1", "saved_model.pb"))
    assert os.path.isfile(first["models_config"])
    classify = tf.saved_model.load(first["export_version_dir"]).signatures["classify"]
    images, labels = [], []
    for record in tf.data.TFRecordDataset(
            [p for p in first_shards(out) if os.path.basename(p).startswith("test-")]):
        ex = schema.parse_example(record)
        images.append(ex[schema.IMAGE_KEY].numpy())
        labels.append(int(ex[schema.LABEL_KEY]))
    result = classify(images=tf.constant(images))
    names = np.array(first["class_names"])
    top1 = result["classes"].numpy()[:, 0].astype(str)
    assert result["classes"].shape == (NUM_EVAL, 5)
    # Same weights, prompts and image view as the evaluation: the same top-1 (up to a near tie).
    exported_top1 = float(np.mean(top1 == names[labels]))
    assert abs(exported_top1 - first["zero_shot_top1"]) <= 2 / NUM_EVAL


@demo_run
def test_second_run_resumes_instead_of_retraining(runs):
    first, second, out, shard_times, _ = runs
    assert second["train"]["start_step"] == TRAIN_STEPS
    assert second["train"]["steps_run"] == 0
    assert {p: os.path.getmtime(p) for p in first_shards(out)} == shard_times  # not rewritten
    # Same checkpoint: the evaluation and the export are reused, not redone.
    assert second["zero_shot_top1"] == first["zero_shot_top1"]
    assert second["export_version_dir"] == first["export_version_dir"]
    assert second["train"]["checkpoint"] == first["train"]["checkpoint"]


def test_missing_data_names_the_install_command(tmp_path):
    empty = tmp_path / "no_fashion_mnist"
    empty.mkdir()
    config.parse(["demo"], [f"run_demo.fashion_mnist_dir = '{empty}'"])
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as e:
        demo.run_demo(str(tmp_path / "out"))
    assert "tools/install.sh" in str(e.value) and str(empty) in str(e.value)
