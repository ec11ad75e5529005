"""CheckpointableDistributedIterator with H input pipelines in one process (a TPU slice of H
hosts), driven over MirroredStrategy on 8 virtual CPUs with H InputContexts made by hand.

The reference order is TF's own: its distributed dataset over H input workers of 8/H CPUs each
(the input path TPUStrategy takes on a slice of H hosts).
"""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.distribute import input_lib, input_util  # TF's multi-host input path

from basic_tf.data import distributed, pipeline
from basic_tf.data.data_config import DataConfig
from basic_tf.training import step, workers
from strategies import mirrored_strategy

REPLICAS, PER_REPLICA, RECORDS = 8, 2, 64


def contexts(num_pipelines: int, replicas: int = REPLICAS) -> list:
    """The InputContexts TPUStrategy gives a slice of `num_pipelines` hosts."""
    return [tf.distribute.InputContext(num_pipelines, h, replicas) for h in range(num_pipelines)]


def range_dataset_fn(shuffled: bool):
    """InputContext -> this pipeline's share (shard_for_pipeline) of 0..RECORDS-1, batched."""
    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices(
            np.array(pipeline.shard_for_pipeline(range(RECORDS), ctx), np.int64))
        if shuffled:  # a position worth saving: a shuffle buffer and an epoch count
            ds = ds.shuffle(8, seed=ctx.input_pipeline_id).repeat()
        return ds.batch(PER_REPLICA, drop_remainder=True)
    return dataset_fn


def tf_distributed_iterator(strategy, dataset_fn, input_contexts):
    """TF's iterator over one input worker per context, each feeding its block of devices."""
    devices = strategy.extended.worker_devices
    k = len(devices) // len(input_contexts)
    input_workers = input_lib.InputWorkers(tuple(
        (devices[h * k], tuple(devices[h * k:(h + 1) * k])) for h in range(len(input_contexts))))
    return iter(input_util.get_distributed_datasets_from_function(
        dataset_fn, input_workers, input_contexts, strategy))


def replica_values(batch, strategy) -> list:
    return [x.numpy().tolist() for x in strategy.experimental_local_results(batch)]


@pytest.mark.parametrize("num_pipelines", [2, 4])
def test_replicas_get_their_hosts_batches_in_tf_order(num_pipelines):
    strategy = mirrored_strategy(REPLICAS)
    ctxs = contexts(num_pipelines)
    ours = distributed.CheckpointableDistributedIterator(
        strategy, range_dataset_fn(shuffled=False), input_contexts=ctxs)
    reference = tf_distributed_iterator(strategy, range_dataset_fn(shuffled=False), ctxs)
    k = REPLICAS // num_pipelines
    steps = RECORDS // (REPLICAS * PER_REPLICA)
    seen = []

    @tf.function
    def next_in_graph(iterator):  # as the Trainer's compiled loop takes it
        return strategy.experimental_local_results(next(iterator))

    for s in range(steps):
        got = ([x.numpy().tolist() for x in next_in_graph(ours)] if s == steps - 1
               else replica_values(next(ours), strategy))
        assert got == replica_values(next(reference), strategy), f"step {s}"
        for r, values in enumerate(got):  # replica r: batch s*k + r%k of pipeline r//k
            share = list(range(RECORDS))[r // k::num_pipelines]
            first = (s * k + r % k) * PER_REPLICA
            assert values == share[first:first + PER_REPLICA], f"step {s} replica {r}"
        seen += [v for values in got for v in values]
    assert sorted(seen) == list(range(RECORDS))  # the shares: disjoint, together complete
    with pytest.raises(StopIteration):
        next(ours)


@pytest.mark.parametrize("num_pipelines", [2, 4])
def test_restore_after_k_steps_continues_the_uninterrupted_stream(num_pipelines, tmp_path):
    """Through the training checkpoint's manager (workers.make_checkpoint_manager, key data)."""
    strategy = mirrored_strategy(REPLICAS)

    def make():
        with strategy.scope():
            state = step.TrainState()
        it = distributed.CheckpointableDistributedIterator(
            strategy, range_dataset_fn(shuffled=True), input_contexts=contexts(num_pipelines))
        manager = workers.make_checkpoint_manager(str(tmp_path), strategy, state, 1, 2, data=it)
        return it, state, manager

    it, state, manager = make()
    for _ in range(3):  # mid-epoch of some pipelines' shuffled shares
        next(it)
    state.step.assign(3)
    path = manager.save()
    expected = [replica_values(next(it), strategy) for _ in range(5)]
    keys = {name.split("/")[1] for name, _ in tf.train.list_variables(path)
            if name.startswith("data/")}
    assert keys == {"iterator"} | {f"iterator_{h}" for h in range(1, num_pipelines)}
    assert distributed.saved_pipelines(name for name, _ in tf.train.list_variables(path)) \
        == num_pipelines

    fresh, _, manager = make()
    manager.restore_from(path)
    assert [replica_values(next(fresh), strategy) for _ in range(5)] == expected


@pytest.mark.parametrize("saved, run", [(4, 2), (4, 1), (1, 4), (2, 4)])
def test_a_checkpoint_of_another_number_of_pipelines_is_refused_before_restoring(saved, run,
                                                                                 tmp_path):
    """A pipeline's position belongs to its share of the shards: resuming it on a slice of
    another number of hosts is refused by the resume's first check, naming both numbers (before:
    4 -> 1 restored host 0's position silently and dropped the others); the same number passes."""
    from basic_tf.training import checkpoints
    strategy = mirrored_strategy(REPLICAS)
    written = distributed.CheckpointableDistributedIterator(
        strategy, range_dataset_fn(shuffled=True), input_contexts=contexts(saved))
    path = tf.train.Checkpoint(data=written).write(str(tmp_path / f"of{saved}"))
    reader = checkpoints.reader(path)
    checkpoints.check_resumable(reader, path, 0, input_pipelines=saved)
    with pytest.raises(checkpoints.ResumeRefused,
                       match=f"input position is of {saved} input pipelines .hosts., this run "
                             f"has {run}: resume on a slice of {saved} hosts"):
        checkpoints.check_resumable(reader, path, 0, input_pipelines=run)


@pytest.mark.parametrize("ctxs, message", [
    (contexts(2)[:1], "1 input pipeline(s) of 4 replicas each do not feed the 8 replicas"),
    (contexts(2, replicas=4), "num_replicas_in_sync=4) does not fit MirroredStrategy with 8"),
    ([contexts(2)[0]] * 2, "repeat an input_pipeline_id: [0, 0]"),
    (contexts(3), "8 replicas in sync do not split evenly over 3 input pipelines"),
])
def test_contexts_that_do_not_fit_the_strategy_are_refused(ctxs, message):
    with pytest.raises(ValueError) as error:
        distributed.CheckpointableDistributedIterator(
            mirrored_strategy(REPLICAS), range_dataset_fn(shuffled=False), input_contexts=ctxs)
    assert message in str(error.value)


def _make_dataset(ctx, pattern, sp_model, training):
    return pipeline.make_dataset(
        ctx, DataConfig(image_size=16, seq_len=8, tokenizer_path=sp_model), training=training,
        file_pattern=pattern, global_batch_size=16, shuffle_buffer=8, cycle_length=1,
        log_skipped=False)


# 4 pipelines (one file each; 14 s in the fast tier, it builds 4 pipelines) is slow: 2 pipelines
# of 2 files each run the same per-host file sharding in the fast tier.
@pytest.mark.parametrize("num_pipelines", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_make_dataset_shards_per_host_disjoint_and_complete(num_pipelines, shards_120,
                                                            sp_model):
    pattern, records = shards_120
    shares = []
    for ctx in contexts(num_pipelines):
        ids = []
        for batch in _make_dataset(ctx, pattern, sp_model, training=False):
            mask = batch["mask"].numpy() == 1
            ids += batch["example_id"].numpy()[mask].tolist()
        shares.append(set(ids))
        assert len(ids) == len(shares[-1]) == len(records) // num_pipelines
    # H shares of 120/H distinct ids whose union is all 120: disjoint and together complete
    assert set().union(*shares) == {r.example_id.encode() for r in records}


def test_make_dataset_replicas_train_on_their_hosts_files(shards_120, sp_model):
    """2 hosts: replicas 0-3 read part0 and part2 (host 0's files), replicas 4-7 part1, part3."""
    pattern, records = shards_120  # part<k> holds records 30k .. 30k+29
    host_ids = [{r.example_id.encode() for i, r in enumerate(records) if i // 30 % 2 == h}
                for h in range(2)]
    strategy = mirrored_strategy(REPLICAS)
    it = distributed.CheckpointableDistributedIterator(
        strategy, lambda ctx: _make_dataset(ctx, pattern, sp_model, training=True),
        input_contexts=contexts(2))
    for r, ids in enumerate(strategy.experimental_local_results(next(it)["example_id"])):
        assert set(ids.numpy().tolist()) <= host_ids[r // 4], f"replica {r}"
