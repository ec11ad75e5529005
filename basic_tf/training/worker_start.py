"""Several workers (--strategy=multi_worker_mirrored, TF_CONFIG) start together or fail, and
agree on their configuration.

Before, a worker whose peer never started (or whose peer's port was taken) waited forever after
"Started server", and the chief with a taken port died with "Could not start gRPC server"
naming no port; two workers given different gin bindings (a batch of 8 on one, 16 on the other)
trained to exit 0, each on its own batches. Now (tools/train.py):

    check_own_port()                 this worker's TF_CONFIG address is free, or ValueError
                                     naming it, before TensorFlow tries to listen there
    with StartDeadline(seconds):     building the strategy and the first collective (the
                                     config check) must end within `seconds`; else a watchdog
                                     process (start_watchdog.py) logs which workers do not
                                     answer and ends this one (exit status 137)
    check_same_config(strategy, text)  every worker's gin config (gin.config_str()) is gathered
                                     by a collective and compared; ValueError naming the
                                     bindings that differ, on every worker
"""
import json
import os
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from basic_tf.training import settings_diff, start_watchdog, workers


def cluster_from_env() -> Tuple[Dict[str, List[str]], str, int]:
    """(cluster {job: [host:port]}, task type, task index) of TF_CONFIG; ({}, '', 0) without."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}, "", 0
    try:
        tf_config = json.loads(raw)
        task = tf_config.get("task", {})
        return dict(tf_config.get("cluster", {})), str(task.get("type", "")), int(
            task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"TF_CONFIG={raw!r} is not valid: {e}") from None


def _address(cluster: dict, task_type: str, index: int) -> str:
    try:
        return cluster[task_type][index]
    except (KeyError, IndexError):
        raise ValueError(f"TF_CONFIG names task {task_type}:{index}, which its cluster "
                         f"{cluster} does not list") from None


def check_own_port() -> None:
    """ValueError naming this worker's TF_CONFIG address when another process listens on its
    port (TensorFlow would fail later with "Could not start gRPC server", naming no port)."""
    cluster, task_type, index = cluster_from_env()
    if not cluster:
        return
    address = _address(cluster, task_type, index)
    port = int(address.rsplit(":", 1)[1])
    probe = socket.socket(socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is no conflict
    try:
        probe.bind(("0.0.0.0", port))   # where TensorFlow's gRPC server listens
    except OSError as e:
        raise ValueError(f"TF_CONFIG: this worker ({task_type} {index}) listens at {address}, "
                         f"but port {port} is in use on this host ({e.strerror}): stop what "
                         "holds it or give this worker another port in every worker's "
                         "TF_CONFIG") from None
    finally:
        probe.close()


class StartDeadline:
    """Context manager: unless `met()` or the block ends within `seconds`, the worker `pid`
    (default: this process) is ended with SIGKILL by a watchdog process (start_watchdog.py:
    TensorFlow's wait for the peers holds the GIL, so no thread could), which first logs the
    workers of TF_CONFIG that do not answer and what to check. A cluster of one, or seconds <= 0,
    does nothing."""

    def __init__(self, seconds: float, pid: Optional[int] = None):
        self.seconds, self.pid = seconds, pid or os.getpid()
        self._watchdog = None

    def __enter__(self):
        cluster, task_type, index = cluster_from_env()
        peers = [[f"{job} {i}", address] for job, addresses in cluster.items()
                 for i, address in enumerate(addresses) if (job, i) != (task_type, index)]
        if peers and self.seconds > 0:
            self._watchdog = subprocess.Popen(
                [sys.executable, start_watchdog.__file__, str(self.pid), str(self.seconds),
                 f"{task_type} {index}", json.dumps(peers)], stdin=subprocess.PIPE)
        return self

    def met(self) -> None:
        """The cluster met: the watchdog ends without doing anything."""
        if self._watchdog is not None:
            self._watchdog.stdin.close()
            self._watchdog.wait()
            self._watchdog = None

    def __exit__(self, *exc):
        self.met()
        return False


def check_same_config(strategy: tf.distribute.Strategy, text: str) -> None:
    """Gathers every worker's gin config text over `strategy`'s collectives and refuses a
    difference (ValueError naming the bindings that differ and their values here and there).
    Nothing to do for a strategy of one worker."""
    role = workers.role_of(strategy)
    if role.num_workers < 2:
        return
    texts = _gather_texts(strategy, text)
    per_worker = max(len(texts) // role.num_workers, 1)
    mine = settings_diff.parse_bindings(text)
    for i, other_text in enumerate(texts):
        if other_text == text:
            continue
        other = settings_diff.parse_bindings(other_text)
        differing = sorted(k for k in set(mine) | set(other) if mine.get(k) != other.get(k))
        shown = "; ".join(f"{k} = {mine.get(k, '(unset)')} here, {other.get(k, '(unset)')} "
                          f"there" for k in differing[:5])
        raise ValueError(
            f"{role.task}: worker {i // per_worker} of TF_CONFIG "
            f"was started with another gin config: {shown or 'the texts differ'}"
            + (f" (and {len(differing) - 5} more)" if len(differing) > 5 else "")
            + ". Start every worker with the same gin files and bindings")


def _gather_texts(strategy: tf.distribute.Strategy, text: str) -> List[str]:
    """The `text` of every replica of every worker (all-gathers of its UTF-8 bytes, padded to
    the longest)."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def gather(array: np.ndarray) -> np.ndarray:   # [1, ...] on each replica -> [replicas, ...]
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(array))
        return strategy.gather(values, axis=0).numpy()

    lengths = gather(np.array([len(data)], np.int32))
    padded = np.zeros([1, int(lengths.max())], np.int32)
    padded[0, :len(data)] = data
    rows = gather(padded)
    return [bytes(row[:n].astype(np.uint8)).decode("utf-8") for row, n in zip(rows, lengths)]
