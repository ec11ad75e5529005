"""SIGTERM or SIGINT while training: Cloud TPU VMs and spot hosts send SIGTERM shortly before
they go; a person presses Ctrl-C (SIGINT). Both stop the run with a checkpoint.

`StopSignalWatcher(flag)` sets `flag` (a bool tf.Variable that the trainer's loop condition reads
before every step) as soon as one of STOP_SIGNALS arrives, even while the main thread is inside a
compiled loop of steps and cannot run a Python signal handler: Python's C-level handler writes
the signal number to a wakeup pipe at once, and a watcher thread reading that pipe sets the flag.
The loop then ends after the step in flight; the caller saves a checkpoint at that step and exits
with EXIT_CODES[signal]: 143 for SIGTERM, the restartable exit status TensorFlow's
PreemptionCheckpointHandler uses, and 130 for SIGINT, the shell's for Ctrl-C. A second Ctrl-C
while the checkpoint is being reached raises KeyboardInterrupt as usual.

Single-host strategies only: under MultiWorkerMirroredStrategy every worker would have to agree
on the step (that is what tf.distribute.experimental.PreemptionCheckpointHandler coordinates), so
loop.train does not watch the signals there: SIGTERM ends the worker like SIGKILL, the others
stop, and the same commands resume from the last checkpoint (tests/training/test_multi_worker.py).
"""
import os
import signal
import threading

import tensorflow as tf
from absl import logging

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_CODES = {signal.SIGTERM.name: 143, signal.SIGINT.name: 130}


class StopSignalWatcher:
    """Context manager: while inside, SIGTERM or SIGINT sets `flag` (and `received`, the first
    signal's name, e.g. 'SIGINT') instead of ending the process. Outside the main thread it does
    nothing (signals can only be set up there)."""

    def __init__(self, flag: tf.Variable):
        self.flag = flag
        self.received = None
        self._active = False
        self._sigints = 0   # SIGINTs seen by the Python handler (the watcher sees them too)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not in the main thread: SIGTERM and SIGINT will not save a "
                            "checkpoint")
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="stop-signal-watcher",
                                        daemon=True)
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
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._request_stop(signal.Signals(signum))

    def _on_signal(self, signum, frame):
        del frame
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:
                raise KeyboardInterrupt   # a second Ctrl-C: stop now, without the checkpoint
        self._request_stop(signal.Signals(signum))   # the watcher may not have run yet

    def _request_stop(self, signum: signal.Signals):
        if self.received is None:
            logging.warning("%s received: finishing the step in flight, then saving a "
                            "checkpoint and exiting", signum.name)
            self.received = signum.name
        self.flag.assign(True)

    def __exit__(self, *exc):
        if not self._active:
            return False
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        os.close(self._write_fd)  # the watcher reads EOF and ends
        self._thread.join(timeout=5)
        os.close(self._read_fd)
        self._active = False
        return False
