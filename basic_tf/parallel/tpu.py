"""Connecting --strategy=tpu to a Cloud TPU: the TPUStrategy in seconds, or one line saying why
not, before a slice's time is spent on a launch that cannot work.

    connect_tpu(tpu) -> TPUClusterResolver of a TPU whose system is initialised

TPUClusterResolver answers from the machine (--tpu=local, a TPU VM), from a grpc:// address, or,
for a TPU name, from the GCE metadata service (project and zone) and the Cloud TPU API; off
Google Cloud that request has no deadline of its own, and a machine without a TPU fails deep in
TensorFlow with a long traceback. Each stage here runs under a deadline, and every failure is a
TPUConnectionError (a ValueError: tools print it as their one-line error) whose first line names
the flags, what the resolver answered, and what to check.
"""
import threading
from typing import Callable, Optional

import tensorflow as tf

CHECKS = ("check that this is a Cloud TPU VM (--tpu=local) or that the TPU named by --tpu exists, "
          "is READY and is in this VM's project and zone (`gcloud compute tpus tpu-vm list`), and "
          "that no other process holds the TPU")


class TPUConnectionError(ValueError):
    """--strategy=tpu could not reach a TPU (the message's first line says why)."""


def tpu_argument(tpu: Optional[str]) -> str:
    """--tpu as TPUClusterResolver takes it: None, '' and 'local' -> 'local' (a TPU VM's own
    chips); a name or a grpc:// address as given."""
    return tpu if tpu else "local"


def _within(seconds: float, what: str, fn: Callable):
    """fn() run in a daemon thread; its result, its exception re-raised, or TimeoutError after
    `seconds` (the thread is abandoned: the caller's process is about to exit)."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            out["error"] = e

    thread = threading.Thread(target=target, name=f"tpu-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} gave no answer within {seconds:g} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else '(no message)'}"


def connect_tpu(tpu: Optional[str], timeout_seconds: float = 60.0):
    """The resolver of the TPU that --tpu names, connected and its TPU system initialised.

    Raises TPUConnectionError naming `--strategy=tpu --tpu=...`, the stage that failed
    (resolver, connection, TPU system), the answer, and CHECKS, within about
    3 x timeout_seconds whatever the network does.
    """
    name = tpu_argument(tpu)
    flag = f"--strategy=tpu --tpu={tpu if tpu is not None else ''}"

    def fail(stage: str, error: BaseException) -> TPUConnectionError:
        return TPUConnectionError(
            f"{flag}: no TPU reached: {stage} answered {_first_line(error)}; {CHECKS}")

    try:
        resolver = _within(timeout_seconds, "TPUClusterResolver",
                           lambda: tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name))
        _within(timeout_seconds, "TPUClusterResolver.master()", resolver.master)
    except Exception as e:  # noqa: BLE001 (any answer but a TPU is reported the same way)
        raise fail(f"TPUClusterResolver(tpu={name!r})", e) from None
    try:
        _within(timeout_seconds, "connect_to_cluster",
                lambda: tf.config.experimental_connect_to_cluster(resolver))
        _within(timeout_seconds, "initialize_tpu_system",
                lambda: tf.tpu.experimental.initialize_tpu_system(resolver))
    except Exception as e:  # noqa: BLE001
        raise fail(f"the TPU system of TPUClusterResolver(tpu={name!r})", e) from None
    if not tf.config.list_logical_devices("TPU"):
        raise fail(f"TPUClusterResolver(tpu={name!r})",
                   RuntimeError("the TPU system started with no TPU device"))
    return resolver
