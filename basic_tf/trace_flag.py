"""`TraceFlag`: a thread-local switch that changes how layers are traced.

Read while a function is traced (not at run time), so a `tf.function` traced inside
`with flag.on():` keeps that behaviour in its graph. Thread-local because MirroredStrategy traces
each replica's function in its own thread.
"""
import contextlib
import threading


class TraceFlag:
    """`with flag.on(): ...` sets it for the enclosed code (nests); `flag.is_on()` reads it."""

    def __init__(self):
        self._local = threading.local()

    @contextlib.contextmanager
    def on(self):
        previous = self.is_on()
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = previous

    def is_on(self) -> bool:
        return getattr(self._local, "on", False)
