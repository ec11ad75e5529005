"""One MirroredStrategy per device count for the whole pytest process.

Every MirroredStrategy numbers its collective groups from 1 and instances from 100, so a second
strategy over the same devices reuses (group, instance) keys; when the reused key's op has another
type or dtype, TF aborts collective ops for the rest of the process ("Collective instance 100
expected type 0 ... got type 2"). Tests therefore never build their own MirroredStrategy: they
call `mirrored_strategy(n)`, which hands out one cached strategy per device count.
"""
import functools

import tensorflow as tf


@functools.lru_cache(maxsize=None)
def mirrored_strategy(num_devices: int = 4) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over /cpu:0 .. /cpu:num_devices-1 of tests/conftest.py's virtual CPUs."""
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_devices)])
