"""make_dataset through strategy.distribute_datasets_from_function on 4 virtual CPUs."""
import numpy as np
import tensorflow as tf

from basic_tf.data import distributed, pipeline
from basic_tf.data.data_config import DataConfig
from data_helpers import write_bad_shard
from strategies import mirrored_strategy


def distributed_dataset(strategy, pattern, sp_model, training, global_batch_size=8, **kwargs):
    def dataset_fn(ctx):
        return pipeline.make_dataset(
            ctx, DataConfig(image_size=16, seq_len=8, tokenizer_path=sp_model),
            training=training, file_pattern=pattern, global_batch_size=global_batch_size,
            shuffle_buffer=16, cycle_length=2, log_skipped=False, **kwargs)
    return strategy.distribute_datasets_from_function(dataset_fn)


def test_mirrored_eval_covers_every_record_once_and_counts_skips(shards_120, sp_model, tmp_path):
    strategy = mirrored_strategy(4)
    pattern, records = shards_120
    bad = str(tmp_path / "bad.tfrecord")
    good_ids, _ = write_bad_shard(bad)
    counter = pipeline.SkippedRecordsCounter()
    ids, masks = [], []

    @tf.function
    def update(batch):
        return counter.update(batch, strategy)

    for batch in distributed_dataset(strategy, [pattern, bad], sp_model, training=False,
                             global_batch_size=12):
        images = strategy.experimental_local_results(batch["images"])
        assert len(images) == 4 and all(x.shape == (3, 16, 16, 3) for x in images)
        for part_ids, part_mask in zip(strategy.experimental_local_results(batch["example_id"]),
                                       strategy.experimental_local_results(batch["mask"])):
            ids += part_ids.numpy().tolist()
            masks += part_mask.numpy().tolist()
        update(batch)
    masks = np.array(masks)
    real = sorted(np.array(ids)[masks == 1].tolist())
    assert real == sorted([r.example_id.encode() for r in records] +
                          [i.encode() for i in good_ids])
    assert int(counter.total.numpy()) == 3  # corrupt + empty + truncated tail
    # summed over the 4 replicas, by cause (what the Trainer reports as skipped_records/<cause>)
    assert counter.summaries() == {
        "skipped_records": 3, "skipped_records/parse_error": 0, "skipped_records/bad_image": 1,
        "skipped_records/empty_caption": 1, "skipped_records/too_large": 0,
        "skipped_records/truncated": 1, "captions_cut": 0}


def test_checkpointable_iterator_gives_replicas_what_tf_distribute_gives(shards_120, sp_model):
    strategy = mirrored_strategy(4)
    pattern, _ = shards_120
    reference = iter(distributed_dataset(strategy, pattern, sp_model, training=True))
    ours = distributed.CheckpointableDistributedIterator(
        strategy, lambda ctx: pipeline.make_dataset(
            ctx, DataConfig(image_size=16, seq_len=8, tokenizer_path=sp_model), training=True,
            file_pattern=pattern, global_batch_size=8, shuffle_buffer=16, cycle_length=2,
            log_skipped=False))
    assert ours.element_spec["images"].shape == (2, 16, 16, 3)

    @tf.function
    def ids_in_graph(iterator):
        batch = next(iterator)
        return strategy.experimental_local_results(batch["example_id"])

    for step in range(3):
        want = strategy.experimental_local_results(next(reference)["example_id"])
        got = (ids_in_graph(ours) if step == 2 else
               strategy.experimental_local_results(next(ours)["example_id"]))
        assert len(got) == 4
        for w, g in zip(want, got):
            np.testing.assert_array_equal(w.numpy(), g.numpy())

