"""Distributed input whose position is saved in checkpoints (exact resume under a strategy).

`strategy.distribute_datasets_from_function` gives the fastest input, but over several devices
(MirroredStrategy, TPUStrategy) its iterator is not trackable in TF 2.20:
`tf.train.Checkpoint(iterator=it)` raises "expecting iterator to be a trackable object".
`CheckpointableDistributedIterator` keeps one plain tf.data iterator per input pipeline of this
process (which a checkpoint saves exactly: shuffle buffer, shard positions, skip counts) and
gives each replica its batch in the order TF's distributed iterator would:

    R replicas in sync, H input pipelines, k = R / H replicas per pipeline;
    pipeline h feeds replicas h*k .. (h+1)*k - 1, and its local replica l of k gets
    batches l, l+k, l+2k, ... of that pipeline.

(TF's input_lib concatenates the per-replica batches of its input workers in worker order,
each worker giving its devices consecutive batches in turn.)

How many pipelines a process runs is the strategy's choice: one on a host (Default, OneDevice,
Mirrored, a one-host TPU), one per worker process under MultiWorkerMirrored (each saves its own
position: basic_tf/training/workers.py), H in the one client process of a TPU slice of H hosts
(TPUStrategy calls the dataset function once per host). Each iterator is made where TF makes
that pipeline's (the host's CPU). The H-pipeline path is tested with H = 2 and 4 pipelines in
one process over 8 virtual CPUs (tests/data/test_data_distributed.py), not on a TPU pod.
"""
from typing import Callable, Optional, Sequence

import tensorflow as tf


def _iterator_name(k: int) -> str:
    """Checkpoint key of the k-th pipeline of this process: `iterator` for the first (the key
    of checkpoints written before several pipelines were supported), then `iterator_<k>`."""
    return "iterator" if k == 0 else f"iterator_{k}"


def _check_contexts(contexts: Sequence[tf.distribute.InputContext],
                    strategy: tf.distribute.Strategy) -> int:
    """-> replicas per pipeline; ValueError naming the context that does not fit `strategy`."""
    if not contexts:
        raise ValueError("input_contexts is empty: give one InputContext per input pipeline "
                         "of this process")
    replicas = strategy.num_replicas_in_sync
    pipelines = contexts[0].num_input_pipelines
    for ctx in contexts:
        if (ctx.num_input_pipelines != pipelines or ctx.num_replicas_in_sync != replicas
                or not 0 <= ctx.input_pipeline_id < pipelines):
            raise ValueError(
                f"InputContext(num_input_pipelines={ctx.num_input_pipelines}, input_pipeline_id="
                f"{ctx.input_pipeline_id}, num_replicas_in_sync={ctx.num_replicas_in_sync}) does "
                f"not fit {type(strategy).__name__} with {replicas} replicas in sync and "
                f"{pipelines} input pipelines")
    ids = [ctx.input_pipeline_id for ctx in contexts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"input_contexts repeat an input_pipeline_id: {ids}")
    if replicas % pipelines:
        raise ValueError(f"{replicas} replicas in sync do not split evenly over {pipelines} "
                         "input pipelines (hosts)")
    per_pipeline = replicas // pipelines
    local = len(strategy.experimental_local_results(  # this process's replicas
        strategy.experimental_distribute_values_from_function(lambda ctx: 0)))
    if len(contexts) * per_pipeline != local:
        raise ValueError(
            f"{len(contexts)} input pipeline(s) of {per_pipeline} replicas each do not feed the "
            f"{local} replicas of {type(strategy).__name__} in this process")
    return per_pipeline


def saved_pipelines(checkpoint_keys, key: str = "data") -> int:
    """How many input pipelines' positions a checkpoint holds under `key` (0: none): its
    `key/iterator`, `key/iterator_1`, ... entries (`checkpoint_keys`: the reader's variable
    names). A position belongs to its pipeline's share of the shards
    (pipeline.shard_for_pipeline), which changes with the number of pipelines, so a resume
    compares this with its own number (training/checkpoints.py check_resumable)."""
    children = {name.split("/")[1] for name in checkpoint_keys if name.startswith(key + "/")}
    return sum(1 for child in children if child == _iterator_name(0)
               or (child.startswith("iterator_") and child[len("iterator_"):].isdigit()))


class CheckpointableDistributedIterator(tf.Module):
    """Per-replica batches from `dataset_fn(input_context)` per pipeline, with a checkpointable
    position.

    Args:
      strategy: any tf.distribute.Strategy.
      dataset_fn: InputContext -> per-replica-batched tf.data.Dataset (e.g.
        `lambda ctx: basic_tf.data.pipeline.make_dataset(ctx, data, training=True, ...)`).
      input_contexts: the InputContexts of this process's pipelines; default: the ones
        `strategy.distribute_datasets_from_function` gives (one per host on a TPU slice). Tests
        give H by hand to run H pipelines over MirroredStrategy on CPU.

    `next(it)` (eager or inside tf.function) returns a dict of PerReplica values, as
    `iter(strategy.distribute_datasets_from_function(dataset_fn))` would. Track it in the
    training checkpoint: `tf.train.Checkpoint(..., data=it)` saves every pipeline's position
    (keys data/iterator, data/iterator_1, ...); resume with the same strategy and contexts
    (a checkpoint of another number of pipelines is refused before it is restored:
    saved_pipelines).
    """

    def __init__(self, strategy: tf.distribute.Strategy,
                 dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
                 input_contexts: Optional[Sequence[tf.distribute.InputContext]] = None):
        super().__init__(name="distributed_input")
        contexts, iterators = [], []

        def make(ctx):  # TF calls this under the pipeline's host device
            contexts.append(ctx)
            iterators.append(iter(dataset_fn(ctx)))
            return tf.data.Dataset.range(1)

        if input_contexts is None:
            strategy.distribute_datasets_from_function(make)
            self._replicas_per_pipeline = _check_contexts(contexts, strategy)
        else:
            self._replicas_per_pipeline = _check_contexts(list(input_contexts), strategy)
            for ctx in input_contexts:
                make(ctx)
        self._strategy = strategy
        self.input_contexts = tuple(contexts)
        self._names = tuple(_iterator_name(k) for k in range(len(iterators)))
        for name, iterator in zip(self._names, iterators):
            setattr(self, name, iterator)

    @property
    def num_pipelines(self) -> int:
        """The input pipelines this process runs (hosts of a TPU slice; else 1)."""
        return len(self._names)

    @property
    def iterators(self) -> list:
        """The plain tf.data iterator of each pipeline, in the order of input_contexts."""
        return [getattr(self, name) for name in self._names]

    def __iter__(self):
        return self

    def __next__(self):
        return self.get_next()

    def get_next(self):
        """One batch per replica of this process, as PerReplica values (raises at the end of
        the data)."""
        k = self._replicas_per_pipeline
        batches = {}  # replica id in sync group -> its batch
        for ctx, iterator in zip(self.input_contexts, self.iterators):
            for local in range(k):
                batches[ctx.input_pipeline_id * k + local] = next(iterator)
        if self._strategy.num_replicas_in_sync == 1:
            return batches[0]
        return self._strategy.experimental_distribute_values_from_function(
            lambda ctx: batches[ctx.replica_id_in_sync_group])

    @property
    def element_spec(self):
        """The per-replica batch structure (dict of tf.TensorSpec)."""
        return self.iterators[0].element_spec
