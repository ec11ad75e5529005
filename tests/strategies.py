"""The tests' MirroredStrategy: basic_tf.parallel.strategy's, one per device count.

make_strategy hands out one cached strategy per device list (a second MirroredStrategy over the
same devices would reuse the first one's collective keys, and TF aborts collectives when a reused
key's op has another type), numbered apart from DTensor's collective groups.
"""
from basic_tf.parallel.strategy import make_strategy


def mirrored_strategy(num_devices: int = 4):
    """MirroredStrategy over /cpu:0 .. /cpu:num_devices-1 of tests/conftest.py's virtual CPUs."""
    return make_strategy("mirrored", devices=[f"/cpu:{i}" for i in range(num_devices)])
