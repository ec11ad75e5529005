"""One flag picks the tf.distribute strategy: TPU pods, multi-worker, one host's devices, or one.

Scale-out is TensorFlow's own: TPUStrategy on Cloud TPU (the cluster resolver finds the pod's
hosts), MultiWorkerMirroredStrategy from TF_CONFIG, MirroredStrategy over one host's devices.
Optimizers must be built inside `strategy.scope()` before the first step (Keras 3 AdamW fails
otherwise: its slots are created lazily in a replica context).
"""
import functools
from typing import Optional, Sequence

import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy as _collective

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


class MirroredStrategy(tf.distribute.MirroredStrategy):
    """tf.distribute.MirroredStrategy whose collective groups are numbered from 10001.

    DTensor numbers its collective groups from 1 (per process), and so does a plain
    MirroredStrategy: a DTensor mesh and a MirroredStrategy in one process then share group 1
    with different sizes and TensorFlow aborts every later collective ("joining a group with size
    2, but that group has size 4 (group_key=1)"). 10_000 is MirroredStrategy's own key offset.
    """

    _collective_key_base = 10_000


class _AllLocalCPUsExtended(_collective.CollectiveAllReduceExtended):
    """CollectiveAllReduceExtended that, on a worker without GPUs or TPUs, makes every local
    logical CPU device a replica (TensorFlow's own makes one CPU replica per worker, whatever
    --virtual_cpu_devices says; with GPUs or TPUs nothing changes)."""

    def _initialize_local_devices(self, cluster_resolver, worker_device):
        devices, device_type = super()._initialize_local_devices(cluster_resolver, worker_device)
        if device_type != "CPU":
            return devices, device_type
        local = tf.DeviceSpec.from_string(worker_device)
        cpus = [tf.DeviceSpec.from_string(d.name) for d in tf.config.list_logical_devices("CPU")]
        count = sum(1 for d in cpus if (d.job, d.task) == (local.job, local.task)) or 1
        return tuple(f"{worker_device}/device:CPU:{i}" for i in range(count)), device_type


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute.MultiWorkerMirroredStrategy (workers from TF_CONFIG) whose replicas on a
    CPU-only worker are all its logical CPU devices: two processes with --virtual_cpu_devices=2
    are 4 replicas, as one process with --strategy=mirrored:4 (tests of multi-worker training
    on one machine). GPU and TPU workers are TensorFlow's strategy unchanged."""

    def __init__(self, cluster_resolver=None, communication_options=None):
        tf.distribute.Strategy.__init__(self, _AllLocalCPUsExtended(
            self, cluster_resolver=cluster_resolver,
            communication_options=(communication_options
                                   or tf.distribute.experimental.CommunicationOptions())))


def make_strategy(name: str = "default",
                  tpu: Optional[str] = None,
                  devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """Builds the strategy named by `name`.

    Args:
      name: one of STRATEGIES. "default" is TF's no-op strategy (one device, replica context
        everywhere); "one_device" pins to `devices[0]` (default: the first GPU, else CPU).
      tpu: TPU name or grpc address for "tpu" (None, '' or 'local' for a TPU VM's own chips);
        a TPU that cannot be reached fails within seconds (parallel/tpu.py:
        TPUConnectionError, a ValueError naming the flag).
      devices: device names for "mirrored"/"one_device" (default: all local GPUs, else CPUs).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy {name!r} is not one of {STRATEGIES}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu":
        from basic_tf.parallel.tpu import connect_tpu
        return tf.distribute.TPUStrategy(connect_tpu(tpu))
    if name == "multi_worker_mirrored":
        return MultiWorkerMirroredStrategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0])
    # '/cpu:0' and '/device:CPU:0' are one device: one cache key.
    return _mirrored(tuple(tf.DeviceSpec.from_string(d).to_string() for d in devices))


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple) -> MirroredStrategy:
    """One strategy per device list and process: a second MirroredStrategy over the same devices
    would reuse the first one's (group, instance) keys, and TF aborts the collectives of the
    process when a reused key's op has another type or dtype."""
    return MirroredStrategy(list(devices))


def parse_strategy_flag(flag: str) -> dict:
    """'mirrored:4' -> {'name': 'mirrored', 'devices': first 4 logical devices}; 'tpu' -> name only.

    The optional ':N' (mirrored only) asks for the first N logical devices (CPU virtual devices
    in tests). Errors name the flag and its value.
    """
    name, sep, count = flag.partition(":")
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={flag!r}: {name!r} is not one of {STRATEGIES}")
    kwargs = {"name": name}
    if sep and name != "mirrored":
        raise ValueError(f"--strategy={flag!r}: only 'mirrored' takes a device count "
                         f"(mirrored:N); use --strategy={name}")
    if sep:
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--strategy={flag!r}: the device count after ':' must be a positive "
                             "integer, e.g. mirrored:4")
        gpus = tf.config.list_logical_devices("GPU")
        pool = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        if int(count) > len(pool):
            raise ValueError(f"--strategy={flag!r} asks for {count} devices; only {len(pool)} "
                             f"are visible: {pool}")
        kwargs["devices"] = pool[:int(count)]
    return kwargs
