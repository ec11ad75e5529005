"""parallel/tpu.py: a TPU resolver that never answers (a named TPU off Google Cloud: the
metadata request has no deadline) is reported within the deadline, naming the flag and stage."""
import threading

import pytest
import tensorflow as tf

from basic_tf.parallel import tpu


def test_a_resolver_that_hangs_is_reported_within_the_deadline(monkeypatch):
    released = threading.Event()

    def hanging_resolver(tpu):
        released.wait(30)
        raise AssertionError("not reached before the deadline")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", hanging_resolver)
    try:
        with pytest.raises(tpu.TPUConnectionError,
                           match=r"^--strategy=tpu --tpu=my-pod: no TPU reached: "
                                 r"TPUClusterResolver\(tpu='my-pod'\) answered TimeoutError: "
                                 r"TPUClusterResolver gave no answer within 0.2 s; check "):
            tpu.connect_tpu("my-pod", timeout_seconds=0.2)
    finally:
        released.set()


def test_resolver_errors_are_one_line(monkeypatch):
    def refusing_resolver(tpu):
        raise ValueError("Please provide a TPU Name to connect to.\nmore detail")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", refusing_resolver)
    with pytest.raises(tpu.TPUConnectionError) as error:
        tpu.connect_tpu(None, timeout_seconds=5)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith("--strategy=tpu --tpu=: no TPU reached: TPUClusterResolver("
                           "tpu='local') answered ValueError: Please provide a TPU Name")


def test_tpu_argument():
    assert [tpu.tpu_argument(t) for t in (None, "", "local", "pod", "grpc://h:8470")] == [
        "local", "local", "local", "pod", "grpc://h:8470"]
