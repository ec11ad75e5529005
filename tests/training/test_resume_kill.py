"""SIGKILL tools/train.py mid-run, rerun the same command: it resumes from the last checkpoint and
its per-step losses equal those the killed run logged after that checkpoint (dropout on and two
micro-batches, so the per-step seeds, the data position and the optimizer state all matter).
A half-written newer checkpoint, as a kill during a save would leave, is ignored."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from training_helpers import bindings, scalar_events

# Slow: tools/train.py in subprocesses, killed by SIGKILL and resumed.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")
TRAIN_STEPS, CHECKPOINT_INTERVAL = 24, 8


def _latest_step(model_dir):
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else 0


def _logged_step(log_path):
    steps = re.findall(rf"step (\d+)/{TRAIN_STEPS} ", open(log_path).read())
    return int(steps[-1]) if steps else 0


def test_sigkill_then_same_command_resumes_exactly(tiny_data, tmp_path):
    binds = bindings(tiny_data, global_batch_size=8) + [
        f"train.train_steps = {TRAIN_STEPS}", "train.steps_per_loop = 1", "train.log_every = 1",
        f"train.checkpoint_interval = {CHECKPOINT_INTERVAL}",
        "text_tower_config.dropout_rate = 0.1", "train.num_micro_batches = 2"]
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, TRAIN, "--gin_file=models/tiny", f"--model_dir={model_dir}"] + [
        f"--gin_bindings={b}" for b in binds]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    log_path = str(tmp_path / "killed.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.time() + 900  # generous: CI machines can be loaded
        # Checkpoints at multiples of 8 and the end: 8, 16, 24. Kill halfway between two, so
        # that steps after the last one are lost.
        while _logged_step(log_path) < 13:
            assert proc.poll() is None, open(log_path).read()[-3000:]
            assert time.time() < deadline, "the run did not reach step 13 within 900 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    restart_from, killed_at = _latest_step(model_dir), _logged_step(log_path)
    assert restart_from == 8 and killed_at - restart_from >= 3, (
        f"killed at step {killed_at} with checkpoint {restart_from}: not between checkpoints")
    latest = tf.train.latest_checkpoint(model_dir)
    with open(latest + ".data-00000-of-00001", "rb") as f:
        data = f.read()
    with open(os.path.join(model_dir, "ckpt-999.data-00000-of-00001"), "wb") as f:
        f.write(data[:len(data) // 2])
    with open(os.path.join(model_dir, "ckpt-999.index"), "wb") as f:
        f.write(b"\x00garbage")

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {latest} at step {restart_from}" in rerun.stderr
    assert _latest_step(model_dir) == TRAIN_STEPS

    (_, killed), (_, resumed) = scalar_events(os.path.join(model_dir, "train"), "loss")
    assert sorted(resumed) == list(range(restart_from + 1, TRAIN_STEPS + 1))
    replayed = [s for s in sorted(killed) if s > restart_from]
    assert len(replayed) >= 3, sorted(killed)
    # Bit for bit: the same process environment runs the same computation on the same state.
    np.testing.assert_array_equal([resumed[s] for s in replayed], [killed[s] for s in replayed])
    assert len(set(resumed.values())) == len(resumed)  # the losses do move from step to step


def test_tool_faults_exit_2_with_the_cause_first(tmp_path):
    """A bad binding value and an unwritable model_dir: one line naming them, exit status 2, no
    traceback (before: a NumPy error and a 50-line traceback)."""
    for args, cause in (
            (["--gin_bindings=train.train_steps = 'ten'", f"--model_dir={tmp_path}/run"],
             "train.train_steps='ten' must be a positive integer"),
            (["--gin_bindings=train.train_steps = 5", "--model_dir=/proc/1/run"],
             "--model_dir=/proc/1/run is not writable"),
            (["--gin_bindings=train.train_steps = 5", f"--model_dir={tmp_path}/run"],
             "Required bindings for `make_dataset` not provided in config")):
        out = subprocess.run([sys.executable, TRAIN, "--gin_file=models/tiny"] + args,
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=REPO))
        assert out.returncode == 2, out.stderr[-2000:]
        assert cause in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
