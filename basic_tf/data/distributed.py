"""Distributed input whose position is saved in checkpoints (exact resume under a strategy).

`strategy.distribute_datasets_from_function` gives the fastest input, but over several devices
(MirroredStrategy, TPUStrategy) its iterator is not trackable in TF 2.20:
`tf.train.Checkpoint(iterator=it)` raises "expecting iterator to be a trackable object".
`CheckpointableDistributedIterator` keeps this host's plain tf.data iterator (which a checkpoint
saves exactly: shuffle buffer, shard positions, skip counts) and gives one batch to each local
replica, in the order the multi-device iterator would: local replica r of k gets batches
r, r+k, r+2k, ... of the host pipeline.

Scope: one input pipeline per Python process (one host: Default, OneDevice, Mirrored,
single-host TPU; MultiWorkerMirrored: one per worker, each saving its own iterator:
basic_tf/training/workers.py). A
single-client multi-host TPU pod calls the dataset function once per host from one process; use
`strategy.distribute_datasets_from_function` there (resume then restarts the data order).
"""
from typing import Callable

import tensorflow as tf


class CheckpointableDistributedIterator(tf.Module):
    """Per-replica batches from `dataset_fn(input_context)`, with a checkpointable position.

    Args:
      strategy: any tf.distribute.Strategy with one input pipeline in this process.
      dataset_fn: InputContext -> per-replica-batched tf.data.Dataset (e.g.
        `lambda ctx: basic_tf.data.pipeline.make_dataset(ctx, training=True)`).

    `next(it)` (eager or inside tf.function) returns a dict of PerReplica values, as
    `iter(strategy.distribute_datasets_from_function(dataset_fn))` would. Track it in the
    training checkpoint: `tf.train.Checkpoint(..., data=it)`.
    """

    def __init__(self, strategy: tf.distribute.Strategy,
                 dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset]):
        super().__init__(name="distributed_input")
        contexts = []

        def capture(ctx):  # the InputContext(s) TF itself would give this process
            contexts.append(ctx)
            return tf.data.Dataset.range(1)

        strategy.distribute_datasets_from_function(capture)
        if len(contexts) != 1:
            raise NotImplementedError(
                f"{type(strategy).__name__} runs {len(contexts)} input pipelines from this "
                "process (multi-host TPU pod); use strategy.distribute_datasets_from_function "
                "directly there (its iterator cannot be checkpointed)")
        ctx = contexts[0]
        self._strategy = strategy
        self._local_replicas = max(ctx.num_replicas_in_sync // ctx.num_input_pipelines, 1)
        self._first_replica = ctx.input_pipeline_id * self._local_replicas
        self.input_context = ctx
        self.iterator = iter(dataset_fn(ctx))

    def __iter__(self):
        return self

    def __next__(self):
        return self.get_next()

    def get_next(self):
        """One batch per local replica, as PerReplica values (raises at the end of the data)."""
        batches = [next(self.iterator) for _ in range(self._local_replicas)]
        if self._local_replicas == 1 and self._strategy.num_replicas_in_sync == 1:
            return batches[0]
        return self._strategy.experimental_distribute_values_from_function(
            lambda ctx: batches[ctx.replica_id_in_sync_group - self._first_replica])

    @property
    def element_spec(self):
        """The per-replica batch structure (dict of tf.TensorSpec)."""
        return self.iterator.element_spec
