"""One MirroredStrategy per device count for the whole pytest process.

Every MirroredStrategy numbers its collective groups from 1 and instances from 100, so a second
strategy over the same devices reuses (group, instance) keys; when the reused key's op has another
type or dtype, TF aborts collective ops for the rest of the process ("Collective instance 100
expected type 0 ... got type 2"). Tests therefore never build their own MirroredStrategy: they
call `mirrored_strategy(n)`, which hands out one cached strategy per device count.
"""
import functools

import tensorflow as tf


class _MirroredStrategy(tf.distribute.MirroredStrategy):
    """DTensor also numbers its collective groups from 1 (per process): a DTensor mesh test and a
    MirroredStrategy test in one pytest worker then share group 1 with different sizes and TF
    aborts ("joining a group with size 2, but that group has size 4 (group_key=1)"). This
    strategy numbers its groups from 10001 (MirroredStrategy's own key offset)."""

    _collective_key_base = 10_000


@functools.lru_cache(maxsize=None)
def mirrored_strategy(num_devices: int = 4) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over /cpu:0 .. /cpu:num_devices-1 of tests/conftest.py's virtual CPUs."""
    return _MirroredStrategy([f"/cpu:{i}" for i in range(num_devices)])
