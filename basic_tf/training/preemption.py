"""SIGTERM while training: Cloud TPU VMs and spot hosts send it shortly before they go.

`SigtermWatcher(flag)` sets `flag` (a bool tf.Variable that the trainer's loop condition reads
before every step) as soon as SIGTERM arrives, even while the main thread is inside a compiled
loop of steps and cannot run a Python signal handler: Python's C-level handler writes the signal
number to a wakeup pipe at once, and a watcher thread reading that pipe sets the flag. The loop
then ends after the step in flight; the caller saves a checkpoint at that step and exits with
EXIT_CODE, the restartable exit status TensorFlow's PreemptionCheckpointHandler uses (143).

Single-host strategies only: under MultiWorkerMirroredStrategy every worker would have to agree
on the step (that is what tf.distribute.experimental.PreemptionCheckpointHandler coordinates), so
loop.train does not watch SIGTERM there: it ends the worker like SIGKILL, the others stop, and
the same commands resume from the last checkpoint (tests/training/test_multi_worker.py).
"""
import os
import signal
import threading

import tensorflow as tf
from absl import logging

EXIT_CODE = 143


class SigtermWatcher:
    """Context manager: while inside, SIGTERM sets `flag` (and `received`) instead of killing the
    process. Outside the main thread it does nothing (signals can only be set up there)."""

    def __init__(self, flag: tf.Variable):
        self.flag = flag
        self.received = False
        self._active = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not in the main thread: SIGTERM will not save a checkpoint")
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="sigterm-watcher", daemon=True)
        self._thread.start()
        self._active = True
        return self

    def _watch(self):
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data:
                self._request_stop()

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self._request_stop()  # the main thread was in Python: the watcher may not have run yet

    def _request_stop(self):
        if not self.received:
            logging.warning("SIGTERM received: finishing the step in flight, then saving a "
                            "checkpoint and exiting")
        self.received = True
        self.flag.assign(True)

    def __exit__(self, *exc):
        if not self._active:
            return False
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous_handler)
        os.close(self._write_fd)  # the watcher reads EOF and ends
        self._thread.join(timeout=5)
        os.close(self._read_fd)
        self._active = False
        return False
