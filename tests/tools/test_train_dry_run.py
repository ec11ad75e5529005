"""tools/train.py before a slice is paid for: --dry_run builds, XLA-compiles and runs one step of
models/tiny and prints the planner's memory against the device's, writing nothing; and
--strategy=tpu on a machine without a TPU fails at once with one line naming the flag, the
resolver's answer and what to check (no hang: the subprocess timeout is the guard, no
traceback). Both run as a user runs them, in subprocesses started side by side."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training"))
from training_helpers import bindings, write_tiny_data  # noqa: E402

pytestmark = pytest.mark.slow  # two tools/train.py subprocesses, one compiling a step with XLA

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")


def _train(model_dir, binds, *flags):
    cmd = [sys.executable, TRAIN, "--gin_file=models/tiny", f"--model_dir={model_dir}", *flags] + [
        f"--gin_bindings={b}" for b in binds]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry_run")
    data = write_tiny_data(str(root / "data"), n=32)
    binds = bindings(data, global_batch_size=8, train_steps=10, num_micro_batches=2)
    with ThreadPoolExecutor(2) as pool:
        dry = pool.submit(_train, str(root / "dry"), binds, "--dry_run")
        tpu = pool.submit(_train, str(root / "tpu"), binds, "--strategy=tpu")
        return {"dry": dry.result(), "tpu": tpu.result(), "root": root}


def test_dry_run_compiles_one_step_and_writes_nothing(runs):
    run = runs["dry"]
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "step XLA-compiled" in out and "global batch 8" in out, out
    assert "memory per device:" in out and "2 micro-batch(es) of 4 per replica" in out, out
    assert "device memory (host RAM" in out and "fits)" in out, out
    assert "nothing written" in out
    assert not (runs["root"] / "dry").exists()  # no checkpoint, summary or lock


def test_tpu_strategy_without_a_tpu_fails_with_one_line(runs):
    run = runs["tpu"]
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    errors = [line for line in run.stderr.splitlines() if line.startswith("E")]
    assert errors, run.stderr[-3000:]
    first = errors[0]
    assert "--strategy=tpu --tpu=: no TPU reached: TPUClusterResolver(tpu='local')" in first or \
        "--strategy=tpu --tpu=: no TPU reached: the TPU system of TPUClusterResolver" in first, first
    assert "answered " in first and "gcloud compute tpus tpu-vm list" in first, first
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
