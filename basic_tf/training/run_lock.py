"""One training run per model_dir: a lock file naming its holder, through tf.io.gfile.

Two trainings started on one model_dir both wrote the same ckpt-N files and event logs, each
overwriting the other without a word. `ModelDirLock(model_dir)` (a context manager, taken by
loop.train; with several workers by the chief only, so one lock per run) writes
model_dir/training.lock = {"host", "pid", "started" (UTC), "command", "token"} and removes it
when the run ends, however it ends short of SIGKILL. A second training on the model_dir is
refused (ModelDirLocked) naming the holder. A lock left by a process that no longer runs on this
host (killed with SIGKILL, a crashed machine restarted) is taken over with a warning; one of
another host cannot be checked from here, so it is refused with the file to remove.

Taking the lock: the holder record is written to a unique sibling and renamed onto the lock
without overwriting, then read back: of two runs that raced to the rename, only the one whose
record is in the file goes on. On a bucket (gs://) the same code runs, but a rename there is a
copy then a delete and "without overwriting" is checked before it, not atomically: two runs
started at nearly the same moment (within one copy) can both go on; a later one is refused.
"""
import datetime
import json
import os
import socket
import sys
import uuid

import tensorflow as tf
from absl import logging

from basic_tf.files import process_alive

LOCK_NAME = "training.lock"


class ModelDirLocked(ValueError):
    """Another training holds model_dir; the message names the holder and the lock file."""


def describe(holder: dict) -> str:
    """e.g. "PID 4242 on host-a since 2026-12-07T12:00:00Z (python3 tools/train.py ...)"."""
    return (f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
            f"({holder.get('command', '')})")


class ModelDirLock:
    """Context manager holding model_dir/training.lock for one training run (see module)."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_NAME)
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                           "%Y-%m-%dT%H:%M:%SZ"),
                       "command": " ".join(os.path.basename(a) if i == 0 else a
                                           for i, a in enumerate(sys.argv))[:300],
                       "token": uuid.uuid4().hex}

    def __enter__(self):
        if not self._try_take():
            other = self._read()
            if other is not None and self._stale(other):
                logging.warning("model_dir lock %s was left by %s, which no longer runs on this "
                                "host: taking it over", self.path, describe(other))
                self._remove_if(other)
                if self._try_take():
                    return self
                other = self._read()
            raise ModelDirLocked(
                f"--model_dir={os.path.dirname(self.path)} is in use by another training: "
                f"{describe(other or {})} holds {self.path}. Wait for it to end or use another "
                "--model_dir; if that process is gone (e.g. on another host), remove the file")
        return self

    def __exit__(self, *exc):
        self._remove_if(self.holder)
        return False

    def _try_take(self) -> bool:
        """Writes our record onto the lock unless one is there; True when the file then holds
        our record."""
        # Not "<lock>.<token>.tmp": ram:// (the tests' bucket) counts a path as existing when
        # another one starts with it.
        tmp = os.path.join(os.path.dirname(self.path), f".{self.holder['token']}.lock.tmp")
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(json.dumps(self.holder, indent=1) + "\n")
        try:
            tf.io.gfile.rename(tmp, self.path, overwrite=False)
        except tf.errors.AlreadyExistsError:
            return False
        finally:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        current = self._read()
        return current is not None and current.get("token") == self.holder["token"]

    def _read(self):
        """The holder record in the lock file, {} if unreadable, None if there is none."""
        try:
            with tf.io.gfile.GFile(self.path, "r") as f:
                return json.loads(f.read())
        except tf.errors.NotFoundError:
            return None
        except (ValueError, tf.errors.OpError):
            return {}

    @staticmethod
    def _stale(holder: dict) -> bool:
        """A record of a process of this host that has ended (another host's: not known)."""
        pid = holder.get("pid")
        return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                and not process_alive(pid))

    def _remove_if(self, holder: dict) -> None:
        """Removes the lock file while it still holds `holder`'s record."""
        current = self._read()
        if current is not None and current.get("token") == holder.get("token"):
            try:
                tf.io.gfile.remove(self.path)
            except tf.errors.NotFoundError:
                pass
