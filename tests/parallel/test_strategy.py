"""The strategy flag: parsing, its errors and the strategies it builds (8 virtual CPUs)."""
import pytest
import tensorflow as tf

from basic_tf.parallel.strategy import make_strategy, parse_strategy_flag
from strategies import mirrored_strategy


def test_mirrored_n_takes_the_first_n_devices_and_is_shared():
    kwargs = parse_strategy_flag("mirrored:4")
    assert kwargs["name"] == "mirrored" and len(kwargs["devices"]) == 4
    strategy = make_strategy(**kwargs)
    assert strategy.num_replicas_in_sync == 4
    assert strategy is mirrored_strategy(4)  # one per device list: no reused collective keys


def test_one_device_default_and_plain_names():
    assert parse_strategy_flag("tpu") == {"name": "tpu"}
    one = make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices[0].endswith("CPU:0")
    assert make_strategy("default") is tf.distribute.get_strategy()


def test_mirrored_without_count_uses_every_device_and_one_device_the_one_named():
    assert parse_strategy_flag("mirrored") == {"name": "mirrored"}
    everything = make_strategy("mirrored")
    assert everything.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU")) == 8
    assert everything is mirrored_strategy(8)
    one = make_strategy("one_device", devices=["/cpu:3"])
    assert one.extended.worker_devices[0].endswith("CPU:3")


@pytest.mark.parametrize("flag, message", [
    ("mirrored:x", r"--strategy='mirrored:x': the device count after ':' must be a positive"),
    ("mirrored:0", r"--strategy='mirrored:0': the device count"),
    ("mirrored:", r"--strategy='mirrored:': the device count"),
    ("mirrored:99", r"--strategy='mirrored:99' asks for 99 devices; only 8 are visible"),
    ("mirroed:2", r"--strategy='mirroed:2': 'mirroed' is not one of \('default'"),
    ("tpu:4", r"--strategy='tpu:4': only 'mirrored' takes a device count .*--strategy=tpu$"),
    ("one_device:2", r"--strategy='one_device:2': only 'mirrored' takes a device count"),
])
def test_bad_device_counts_are_named(flag, message):
    with pytest.raises(ValueError, match=message):
        parse_strategy_flag(flag)


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match=r"strategy 'mirroed' is not one of"):
        make_strategy("mirroed")
