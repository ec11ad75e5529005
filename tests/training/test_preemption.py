"""SIGTERM (a preemption notice) in the middle of a loop of steps: tools/train.py saves a
checkpoint at the step it arrived and exits 143; the same command resumes, and the run ends with
the weights of an uninterrupted run (dropout on, two micro-batches: the per-step seeds, the data
position and the optimizer state all matter). Before: SIGTERM killed the run with no save."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.training.preemption import SigtermWatcher
from training_helpers import bindings, checkpoint_values

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")
STEPS, LOOP = 40, 20


def _command(data, model_dir):
    binds = bindings(data, global_batch_size=8) + [
        f"train.train_steps = {STEPS}", f"train.steps_per_loop = {LOOP}",
        f"train.checkpoint_interval = {LOOP}", "text_tower_config.dropout_rate = 0.1",
        "train.num_micro_batches = 2"]
    return [sys.executable, TRAIN, "--gin_file=models/tiny", f"--model_dir={model_dir}"] + [
        f"--gin_bindings={b}" for b in binds]


def test_sigterm_sets_the_flag_inside_and_nothing_outside():
    """The watcher itself (fast): SIGTERM inside sets the flag instead of ending the process,
    and the previous handler is back afterwards; outside the main thread it is inert."""
    flag = tf.Variable(False)
    before = signal.getsignal(signal.SIGTERM)
    with SigtermWatcher(flag) as watcher:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)   # handled before the next bytecode
    assert watcher.received and bool(flag.numpy())
    assert signal.getsignal(signal.SIGTERM) is before
    in_thread = {}

    def enter():
        with SigtermWatcher(tf.Variable(False)) as w:
            in_thread["active"] = w._active
    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert in_thread == {"active": False} and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow  # tools/train.py in subprocesses, stopped by SIGTERM and resumed
def test_sigterm_mid_loop_saves_there_and_resumes_exactly(tiny_data, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    reference = str(tmp_path / "reference")
    done = subprocess.run(_command(tiny_data, reference), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # Logs a person reads: one progress line per loop, no raw output dicts (orbit printed each
    # loop's dict to stdout and logged it again).
    log = done.stdout + done.stderr
    assert [log.count(f"step {s}/{STEPS} (") for s in (LOOP, STEPS)] == [1, 1], log[-3000:]
    assert "output: {" not in log and "training finished at step 40/40" in log

    model_dir = str(tmp_path / "run")
    log_path = str(tmp_path / "preempted.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_command(tiny_data, model_dir), cwd=REPO, env=env, stdout=log,
                                stderr=log)
        deadline = time.time() + 900
        # After the first loop's checkpoint, the second loop (steps 21..40) is in flight.
        while tf.train.latest_checkpoint(model_dir) is None:
            assert proc.poll() is None, open(log_path).read()[-3000:]
            assert time.time() < deadline, "no first checkpoint within 900 s"
            time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 143, open(log_path).read()[-3000:]
    text = open(log_path).read()
    stopped = int(re.search(r"training stopped at step (\d+)", text).group(1))
    assert LOOP < stopped < STEPS, f"SIGTERM was not handled mid-loop: step {stopped}"
    assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, f"ckpt-{stopped}")

    rerun = subprocess.run(_command(tiny_data, model_dir), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {os.path.join(model_dir, f'ckpt-{stopped}')}" in rerun.stderr
    ours = checkpoint_values(os.path.join(model_dir, f"ckpt-{STEPS}"), "model/")
    theirs = checkpoint_values(os.path.join(reference, f"ckpt-{STEPS}"), "model/")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
