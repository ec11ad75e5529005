"""Placing a training run on a DTensor mesh (model parallelism): what changes for `train.mesh`.

The mesh is another way to place the same task under the same orbit Trainer (trainer.py), not a
second loop:

    make_training_mesh('batch:B,model:M')  -> a mesh of exactly all local devices
    shard_task(task, mesh, optimizer_fn)   -> weights and a fresh optimizer's slots sharded by
                                              parallel.dtensor.layout_rules (model axis)
    with dtensor.default_mesh(mesh): TrainState(), counters  -> replicated DTensor variables
    MeshBatches(mesh, dataset)             -> the host pipeline's global batches split over the
                                              batch axis; its position is in the checkpoint
    Trainer(placement, ...)                -> one compiled step per batch (a Python loop of
                                              steps), the same step function as a strategy's

The checkpoint has the same keys as on a strategy (model, optimizer, state, data,
skipped_records); the model is saved under "model" as on one device, so a sharded checkpoint
restores into an unsharded DualEncoder (tools/export.py, the zero-shot tools) and the input
position is restored exactly. A save of DTensor variables costs a compilation (TF retraces its
sharded save on every call), so checkpoints are written at multiples of checkpoint_interval.
"""
from typing import Callable, Optional

import tensorflow as tf
from tensorflow.experimental import dtensor

from basic_tf.parallel import dtensor as pd
from basic_tf.parallel.dtensor.mesh import default_device_type


def make_training_mesh(flag: str, grappler: bool = True) -> dtensor.Mesh:
    """'batch:B,model:M' -> a mesh over ALL local devices of the accelerator type (CPU if none):
    a mesh that leaves devices idle is an error, as is one larger than the devices visible.

    grappler=False turns TF's graph optimizer off for the process: it rewrites each device's
    function of a DTensor program separately, which on 8 CPUs is about half of the step's
    compilation and most of each sharded checkpoint save's (the tests use this)."""
    if not grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    sizes = pd.parse_mesh_flag(flag)
    device_type = default_device_type()
    count = len(tf.config.list_logical_devices(device_type))
    if sizes["batch"] * sizes["model"] != count:
        raise ValueError(
            f"train.mesh={flag!r} has {sizes['batch']} x {sizes['model']} = "
            f"{sizes['batch'] * sizes['model']} devices but {count} {device_type} devices are "
            f"visible; use a mesh of exactly {count} devices (or, on CPU, "
            f"--virtual_cpu_devices={sizes['batch'] * sizes['model']})")
    return pd.make_mesh(**sizes, device_type=device_type)


def shard_task(task, mesh: dtensor.Mesh, optimizer_fn: Callable,
               rules: Optional[tuple] = None):
    """Moves the task's model and a fresh optimizer, optimizer_fn(variables), onto the mesh,
    laid out by `rules` (default: parallel.dtensor.layout_rules()); -> optimizer. A model axis
    that does not divide a sharded dimension raises the layout code's error naming the
    variable."""
    plan = pd.shard_model(task.model, mesh, rules or pd.layout_rules())
    optimizer = optimizer_fn(task.trainable_variables)
    pd.shard_optimizer(optimizer, plan, mesh)
    return optimizer


class MeshBatches(tf.Module):
    """Global batches of `dataset` (a host tf.data pipeline), each array split on its first
    dimension over the mesh's "batch" axis. Iterated eagerly (one batch per compiled step);
    track it in the checkpoint (key "data") to resume the input exactly."""
    num_pipelines = 1   # one host pipeline (data/iterator), as CheckpointableDistributedIterator's

    def __init__(self, mesh: dtensor.Mesh, dataset: tf.data.Dataset):
        super().__init__(name="mesh_input")
        self._mesh = mesh
        self.iterator = iter(dataset)

    def __iter__(self):
        return self

    def __next__(self):
        return {key: pd.shard_batch(value, self._mesh)
                for key, value in next(self.iterator).items()}

    @property
    def element_spec(self):
        """The global batch structure (dict of tf.TensorSpec)."""
        return self.iterator.element_spec


class MeshDataset:
    """An iterable of MeshBatches passes over `dataset` (orbit's evaluator iterates its dataset
    anew at each evaluation)."""

    def __init__(self, mesh: dtensor.Mesh, dataset: tf.data.Dataset):
        self._mesh, self._dataset = mesh, dataset

    def __iter__(self):
        return MeshBatches(self._mesh, self._dataset)
