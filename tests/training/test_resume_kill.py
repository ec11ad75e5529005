"""SIGKILL tools/train.py mid-run, rerun the same command: it resumes from the last checkpoint and
its per-step losses are those of an uninterrupted run (dropout on, so the per-step seeds are
tested too). A half-written newer checkpoint left by the kill is ignored."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from basic_tf import config
from basic_tf.training import loop
from training_helpers import bindings, scalar_events

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_STEPS = 40


def _latest_step(model_dir):
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else 0


def test_sigkill_then_same_command_resumes_exactly(tiny_data, tmp_path):
    binds = bindings(tiny_data, global_batch_size=8) + [
        f"train.train_steps = {TRAIN_STEPS}", "train.steps_per_loop = 1",
        "train.checkpoint_interval = 3", "text_tower_config.dropout_rate = 0.1",
        "compute_contrastive_step.num_micro_batches = 2"]
    model_dir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--gin_file=tiny",
           f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in binds]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.time() + 300
        while _latest_step(model_dir) < 9:
            assert proc.poll() is None, open(tmp_path / "killed.log").read()[-3000:]
            assert time.time() < deadline, "no checkpoint 9 within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _latest_step(model_dir)
    assert 9 <= killed_at < TRAIN_STEPS, f"the run was not killed mid-run ({killed_at})"
    # What a kill during a later save could leave: shards of ckpt-999 but no index update.
    latest = tf.train.latest_checkpoint(model_dir)
    with open(latest + ".data-00000-of-00001", "rb") as f:
        data = f.read()
    with open(os.path.join(model_dir, "ckpt-999.data-00000-of-00001"), "wb") as f:
        f.write(data[:len(data) // 2])
    with open(os.path.join(model_dir, "ckpt-999.index"), "wb") as f:
        f.write(b"\x00garbage")

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"ckpt-{killed_at}" in rerun.stderr  # resumed from the last complete checkpoint
    assert _latest_step(model_dir) == TRAIN_STEPS

    reference_dir = str(tmp_path / "reference")
    config.parse(["tiny"], binds)
    loop.train(reference_dir)
    (_, reference), = scalar_events(os.path.join(reference_dir, "train"), "loss")
    assert sorted(reference) == list(range(1, TRAIN_STEPS + 1))
    (_, first), (_, second) = scalar_events(os.path.join(model_dir, "train"), "loss")
    assert min(second) == killed_at + 1 and max(second) == TRAIN_STEPS
    assert max(first) >= killed_at
    for run in (first, second):
        steps = sorted(run)
        np.testing.assert_allclose([run[s] for s in steps], [reference[s] for s in steps],
                                   rtol=1e-5, err_msg=str(steps))
    overlap = sorted(set(first) & set(second))
    np.testing.assert_allclose([first[s] for s in overlap], [second[s] for s in overlap],
                               rtol=1e-6)
