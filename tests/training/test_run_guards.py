"""Guards a training run passes before anything heavy (issue 24, README "Reliability"): a mesh
run's model_dir resumed without the mesh, and one run per model_dir (the model_dir lock). Each
test injects the fault and fails on the code before the guard."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.training import run_lock
from basic_tf.training.placement import Placement
from training_helpers import bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fake_checkpoint(model_dir, step, host_part):
    """model_dir/checkpoint naming ckpt-<step> (what latest_checkpoint reads), its files, and
    with host_part the input position a mesh run writes beside it in model_dir/host/."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\n'
                f'all_model_checkpoint_paths: "ckpt-{step}"\n')
    for suffix in (".index", ".data-00000-of-00001"):
        open(os.path.join(model_dir, f"ckpt-{step}{suffix}"), "wb").close()
    if host_part:
        os.makedirs(os.path.join(model_dir, "host"), exist_ok=True)
        open(os.path.join(model_dir, "host", f"ckpt-{step}.index"), "wb").close()


def test_a_mesh_model_dir_resumed_without_the_mesh_says_the_mesh_is_missing(tmp_path):
    """Injected fault (issue 24 item 7): a checkpoint with its host part (a mesh run's) resumed
    on one device. The old code failed at the restore, blaming "another gin config"."""
    model_dir = str(tmp_path / "mesh_run")
    _fake_checkpoint(model_dir, 10, host_part=True)
    with pytest.raises(ValueError, match=rf"--model_dir={model_dir} was trained on a DTensor "
                                         r"mesh, and the mesh is missing: its checkpoint "
                                         rf".*ckpt-10 keeps the input position in .*host/ckpt-10"
                                         r".*Give the --mesh=batch:B,model:M"):
        Placement(tf.distribute.get_strategy()).check_resume(model_dir)
    Placement(tf.distribute.get_strategy()).check_resume(str(tmp_path / "fresh"))
    one_device = str(tmp_path / "one_device")
    _fake_checkpoint(one_device, 10, host_part=False)
    Placement(tf.distribute.get_strategy()).check_resume(one_device)


def _lock_file(model_dir, **holder):
    os.makedirs(model_dir, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-02T03:04:05Z",
              "command": "train.py --model_dir=x", "token": "theirs"}
    record.update(holder)
    with open(os.path.join(model_dir, run_lock.LOCK_NAME), "w") as f:
        json.dump(record, f)


def _ended_pid():
    """The PID of a process of this host that has ended (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_training_on_a_held_model_dir_is_refused_naming_the_holder(tiny_data, tmp_path):
    """Injected fault (issue 24 item 4): model_dir held by a live training (this process's PID
    stands for it). The old code trained on, both runs writing the same ckpt-N files."""
    model_dir = str(tmp_path / "run")
    _lock_file(model_dir)
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=8) + [
        "train.train_steps = 2", "train.steps_per_loop = 2", "train.checkpoint_interval = 2"])
    with pytest.raises(run_lock.ModelDirLocked) as caught:
        from_gin.train(model_dir)
    message = str(caught.value).splitlines()[0]
    assert message.startswith(f"--model_dir={model_dir} is in use by another training: PID "
                              f"{os.getpid()} on {socket.gethostname()} since "
                              "2026-01-02T03:04:05Z"), message
    assert os.path.join(model_dir, run_lock.LOCK_NAME) in message
    assert tf.train.latest_checkpoint(model_dir) is None
    assert json.load(open(os.path.join(model_dir, run_lock.LOCK_NAME)))["token"] == "theirs"


def test_a_lock_of_another_host_is_refused(tmp_path):
    model_dir = str(tmp_path / "run")
    _lock_file(model_dir, host="some-other-host", pid=_ended_pid())
    with pytest.raises(run_lock.ModelDirLocked, match="on some-other-host since .* remove the "
                                                      "file"):
        with run_lock.ModelDirLock(model_dir):
            pass


def test_a_stale_lock_of_an_ended_process_is_taken_over_with_a_warning(tmp_path, caplog):
    model_dir = str(tmp_path / "run")
    dead = _ended_pid()
    _lock_file(model_dir, pid=dead)
    with run_lock.ModelDirLock(model_dir) as lock:
        held = json.load(open(lock.path))
        assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname())
        # held: a second lock of the same model_dir (this process is alive) is refused
        with pytest.raises(run_lock.ModelDirLocked, match=f"PID {os.getpid()} on "):
            with run_lock.ModelDirLock(model_dir):
                pass
    assert any(f"was left by PID {dead} on {socket.gethostname()}" in m and "taking it over" in m
               for m in caplog.messages), caplog.messages
    assert os.listdir(model_dir) == []     # released, no temporary left


@pytest.mark.slow  # two tools/train.py processes on one model_dir
def test_two_train_commands_on_one_model_dir(tiny_data, tmp_path):
    """Issue 24 item 4, as a user meets it: a second basic-train on the model_dir of a running
    one exits 2 naming the holder; the first is not disturbed (it is stopped with SIGTERM)."""
    model_dir = str(tmp_path / "run")
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--gin_file=models/tiny",
               f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in bindings(
                   tiny_data, global_batch_size=8, train_steps=100000, steps_per_loop=5,
                   checkpoint_interval=100000)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        lock = os.path.join(model_dir, run_lock.LOCK_NAME)
        deadline = time.time() + 600
        while not os.path.exists(lock):
            assert first.poll() is None and time.time() < deadline, "the first run took no lock"
            time.sleep(0.05)
        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        assert (f"--model_dir={model_dir} is in use by another training: PID {first.pid} on "
                f"{socket.gethostname()}") in second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=300)
    log.close()
    assert first.returncode == 143, (tmp_path / "first.log").read_text()[-3000:]
    assert not os.path.exists(lock)
