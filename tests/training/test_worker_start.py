"""Several workers start together or fail, and agree (issue 24 item 1, README "Reliability"):
a taken port is named before TensorFlow listens, a missing peer ends the wait after
--worker_start_timeout naming its address, and workers given different gin bindings are refused
naming them. Injected faults: a listener on the worker's port, a peer never started, a binding
given to one worker only (the old code: a gRPC error naming no port, an endless wait, exit 0)."""
import json
import os
import socket
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from basic_tf.training import worker_start
from basic_tf.training.workers import WorkerRole
from training_helpers import bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_a_taken_port_is_named(monkeypatch):
    listener = socket.socket()
    listener.bind(("", 0))
    listener.listen()
    port = listener.getsockname()[1]
    free, = _free_ports(1)
    try:
        monkeypatch.setenv("TF_CONFIG", _tf_config([port, free], 0))
        with pytest.raises(ValueError, match=rf"this worker \(worker 0\) listens at "
                                             rf"127.0.0.1:{port}, but port {port} is in use"):
            worker_start.check_own_port()
        monkeypatch.setenv("TF_CONFIG", _tf_config([port, free], 1))
        worker_start.check_own_port()   # worker 1's port is free
    finally:
        listener.close()


def test_the_deadline_names_the_workers_that_do_not_answer_and_ends_the_wait(monkeypatch,
                                                                           capfd):
    """A process stuck in a wait (here `sleep`, in training TensorFlow's wait for the peers,
    GIL held) is ended by the watchdog after the deadline, which names the absent peer."""
    ports = _free_ports(2)
    monkeypatch.setenv("TF_CONFIG", _tf_config(ports, 0))
    stuck = subprocess.Popen(["sleep", "600"])
    try:
        with worker_start.StartDeadline(0.05, pid=stuck.pid):
            assert stuck.wait(timeout=120) == -signal.SIGKILL
    finally:
        stuck.kill()
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("E start_watchdog] worker 0: the workers of TF_CONFIG did not all "
                           "start within --worker_start_timeout=0.05 s; not answering: worker 1 "
                           f"at 127.0.0.1:{ports[1]} ("), line
    # met in time: the watchdog ends quietly and nothing is killed
    alive = subprocess.Popen(["sleep", "600"])
    try:
        with worker_start.StartDeadline(3600, pid=alive.pid) as deadline:
            deadline.met()
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()


def test_different_configs_are_refused_naming_the_bindings(monkeypatch):
    """The comparison, with the collective's result given: worker 1 has another batch size."""
    mine = "make_dataset.global_batch_size = 16\ntrain.train_steps = 10\n"
    theirs = "make_dataset.global_batch_size = 8\ntrain.train_steps = 10\n"
    monkeypatch.setattr(worker_start.workers, "role_of", lambda s: WorkerRole("worker-0", True, 2))
    monkeypatch.setattr(worker_start, "_gather_texts", lambda s, t: [mine, mine, theirs, theirs])
    with pytest.raises(ValueError, match=r"worker-0: worker 1 of TF_CONFIG was started with "
                                         r"another gin config: make_dataset.global_batch_size "
                                         r"= 16 here, 8 there\. Start every worker"):
        worker_start.check_same_config(None, mine)
    monkeypatch.setattr(worker_start, "_gather_texts", lambda s, t: [mine] * 4)
    worker_start.check_same_config(None, mine)
    worker_start.check_same_config(tf.distribute.get_strategy(), mine)   # one worker: nothing


def _worker(data, model_dir, ports, index, *extra, timeout=120):
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--gin_file=models/tiny",
               f"--model_dir={model_dir}", "--strategy=multi_worker_mirrored",
               "--virtual_cpu_devices=2", f"--worker_start_timeout={timeout}"] + [
        f"--gin_bindings={b}" for b in bindings(data, global_batch_size=8, train_steps=2,
                                                  steps_per_loop=1, checkpoint_interval=2)] + [
        *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO,
               TF_CONFIG=_tf_config(ports, index))
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow   # tools/train.py worker processes
def test_a_peer_that_never_starts_ends_the_wait(tiny_data, tmp_path):
    ports = _free_ports(2)
    chief = _worker(tiny_data, str(tmp_path / "run"), ports, 0, timeout=20)
    out, _ = chief.communicate(timeout=600)
    assert chief.returncode == -signal.SIGKILL, out[-3000:]
    assert ("E start_watchdog] worker 0: the workers of TF_CONFIG did not all start within "
            f"--worker_start_timeout=20 s; not answering: worker 1 at 127.0.0.1:{ports[1]}") in out


@pytest.mark.slow   # two tools/train.py worker processes
def test_workers_of_different_configs_are_refused(tiny_data, tmp_path):
    ports = _free_ports(2)
    model_dir = str(tmp_path / "run")
    procs = [_worker(tiny_data, model_dir, ports, 0),
             _worker(tiny_data, model_dir, ports, 1,
                     "--gin_bindings=make_dataset.global_batch_size = 4")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for index, (proc, out) in enumerate(zip(procs, outs)):
        assert proc.returncode == 2, out[-3000:]
        assert (f"worker-{index}: worker {1 - index} of TF_CONFIG was started with another gin "
                "config: make_dataset.global_batch_size = ") in out, out[-3000:]
    assert not os.path.exists(os.path.join(model_dir, "checkpoint"))
