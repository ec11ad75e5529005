"""Placement: where a training run's variables, batches and steps live, chosen once.

A run is placed either by a tf.distribute strategy (one device, mirrored replicas, several
workers, TPU) or on a DTensor mesh (`train.mesh='batch:B,model:M'`: weights sharded over the
model axis, mesh_placement.py). The choice is made here, when the Placement is built; the loop
asks it, and never branches on which it is:

    model_scope()          where the model is built (the strategy's scope; on a mesh the
                           default strategy's, then place_task moves it)
    place_task(task)       -> the optimizer, built on task.trainable_variables (on a mesh the
                           weights and the optimizer's slots sharded by the layout rules)
    counters_scope()       where counters are made (mirrored, or replicated on the mesh)
    input(dataset_fn)      the checkpointable training iterator (per-replica batches, or
                           global batches sharded over the batch axis)
    eval_input(dataset_fn) the evaluation dataset, iterated anew at each evaluation
    checkpoint_manager(..) the manager writing model_dir (several workers: only the chief;
                           on a mesh the input position beside the DTensor checkpoint)
    compiles_loops         whether a loop over the iterator compiles (not on a mesh: one
                           compiled step per batch)
    trace_context()        what a step is traced under (the models' mesh formulations)
    loop_variables_scope() where the Trainer's per-loop sums live
    first_replica(t), mean(t)   the step's reductions over replicas
"""
import contextlib
from typing import Callable, Optional, Union

import tensorflow as tf
from tensorflow.experimental import dtensor

from basic_tf.data.distributed import CheckpointableDistributedIterator
from basic_tf.training import checkpoints, mesh_placement, workers
from basic_tf.training.optimizers import make_optimizer


def mesh_with_strategy_error(mesh, strategy: str) -> ValueError:
    """The one refusal of a mesh beside a strategy (tools/train.py raises it for the flags
    before building the strategy they name)."""
    return ValueError(f"train.mesh / --mesh={mesh} replaces the tf.distribute strategy: use the "
                      f"default strategy (no --strategy), not {strategy}")


class Placement:
    """`strategy` (default: the current one), or a DTensor mesh when `mesh` is given: a string
    'batch:B,model:M' (TrainConfig.mesh: a mesh of all local devices) or a dtensor.Mesh already
    made (the tests' meshes of some devices). A mesh needs the default strategy (ValueError
    naming both)."""

    def __init__(self, strategy: Optional[tf.distribute.Strategy] = None,
                 mesh: Union[None, str, dtensor.Mesh] = None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.mesh: Optional[dtensor.Mesh] = None
        if mesh:
            if (self.strategy is not tf.distribute.get_strategy()
                    or tf.distribute.has_strategy()):
                raise mesh_with_strategy_error(mesh, type(self.strategy).__name__)
            self.mesh = (mesh if isinstance(mesh, dtensor.Mesh)
                         else mesh_placement.make_training_mesh(mesh))
        self.role = workers.role_of(self.strategy)

    @property
    def num_replicas(self) -> int:
        """Replicas the global batch is split over (on a mesh: 1, the batch axis is inside)."""
        return self.strategy.num_replicas_in_sync

    def model_scope(self):
        return self.strategy.scope()

    def place_task(self, task):
        """-> the optimizer of task.trainable_variables, placed with them."""
        if self.mesh is not None:
            return mesh_placement.shard_task(task, self.mesh)
        with self.strategy.scope():
            return make_optimizer(task.trainable_variables)

    def counters_scope(self):
        return (self.strategy.scope() if self.mesh is None
                else dtensor.default_mesh(self.mesh))

    def input(self, dataset_fn: Callable):
        """The training iterator of dataset_fn(InputContext) -> per-replica batched dataset."""
        if self.mesh is None:
            return CheckpointableDistributedIterator(self.strategy, dataset_fn)
        return mesh_placement.MeshBatches(self.mesh, dataset_fn(tf.distribute.InputContext()))

    def eval_input(self, dataset_fn: Callable):
        if self.mesh is None:
            return self.strategy.distribute_datasets_from_function(dataset_fn)
        return mesh_placement.MeshDataset(self.mesh, dataset_fn(tf.distribute.InputContext()))

    @property
    def compiles_loops(self) -> bool:
        return self.mesh is None

    def loop_variables_scope(self):
        """Plain variables updated in cross-replica context under a strategy; replicated
        DTensor variables on a mesh (a plain variable in a DTensor function would be updated
        once per device)."""
        return (contextlib.nullcontext() if self.mesh is None
                else dtensor.default_mesh(self.mesh))

    def first_replica(self, value):
        """A value every replica holds identically, from the first replica."""
        return self.strategy.experimental_local_results(value)[0]

    def mean(self, value):
        """The mean over replicas of a per-replica scalar."""
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)

    def trace_context(self):
        """What a step is traced under: the mesh formulations of the models (mesh_ops.py) on a
        mesh, nothing under a strategy."""
        from basic_tf.parallel.dtensor import mesh_formulations
        return mesh_formulations() if self.mesh is not None else contextlib.nullcontext()

    def checkpoint_manager(self, model_dir: str, state, checkpoint_interval: int,
                           max_checkpoints: int, *, model, optimizer, data, skipped_records):
        """The manager of model_dir's checkpoints: keys model, optimizer, state, data,
        skipped_records whatever the placement."""
        optimizer = checkpoints.optimizer_state(optimizer)
        if self.mesh is None:  # several workers: only the chief writes into model_dir
            return workers.make_checkpoint_manager(
                model_dir, self.strategy, state, checkpoint_interval, max_checkpoints,
                model=model, optimizer=optimizer, data=data, skipped_records=skipped_records)
        # the input position beside the DTensor checkpoint (checkpoints.py)
        return checkpoints.make_checkpoint_manager(
            model_dir, state, checkpoint_interval, max_checkpoints, model=model,
            optimizer=optimizer, skipped_records=skipped_records, host_objects={"data": data})
