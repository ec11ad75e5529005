"""Bad records (corrupt JPEG, empty caption, truncated shard) are skipped, counted, never fatal."""
import numpy as np
import tensorflow as tf

from basic_tf.data import pipeline
from basic_tf.data.data_config import DataConfig
from data_helpers import write_bad_shard


def build(pattern, sp_model, training, **kwargs):
    data = DataConfig(image_size=16, seq_len=8, tokenizer_path=sp_model)
    args = dict(file_pattern=pattern, global_batch_size=7, shuffle_buffer=1, cycle_length=1,
                log_skipped=False)
    args.update(kwargs)
    return pipeline.make_dataset(None, data, training=training, **args)


def test_training_runs_through_bad_records_and_counts_them(tmp_path, sp_model):
    path = str(tmp_path / "bad.tfrecord")
    good_ids, _ = write_bad_shard(path)  # 4 good, corrupt, empty, 3 good, truncated record
    ds = build(path, sp_model, training=True)
    counter = pipeline.SkippedRecordsCounter()
    w = tf.Variable(tf.zeros([16 * 16 * 3, 1]))
    skipped, ids, losses = [], [], []
    for batch in ds.take(4):  # a toy linear model trains on the batches: 4 x 7 = 4 epochs
        with tf.GradientTape() as tape:
            pred = tf.reshape(batch["images"], [7, -1]) @ w
            loss = tf.reduce_mean((pred[:, 0] - tf.cast(batch["labels"], tf.float32)) ** 2)
        w.assign_sub(1e-4 * tape.gradient(loss, w))
        losses.append(float(loss))
        counter.update(batch)
        skipped += batch["skipped"].numpy().tolist()
        ids += [i.decode() for i in batch["example_id"].numpy()]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # no shuffling: each epoch is the 7 good records; the corrupt + empty pair is counted on
    # the 5th, the truncated shard's lost last record on the next epoch's first example
    assert ids == good_ids * 4
    assert skipped == [0, 0, 0, 0, 2, 0, 0] + [1, 0, 0, 0, 2, 0, 0] * 3
    assert int(counter.total.numpy()) == sum(skipped) == 11


def test_evaluation_counts_bad_records_including_at_the_very_end(tmp_path, sp_model):
    path = str(tmp_path / "bad.tfrecord")
    good_ids, _ = write_bad_shard(path)
    batches = list(build(path, sp_model, training=False, global_batch_size=4))
    mask = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([b["example_id"] for b in batches])
    skipped = np.concatenate([b["skipped"] for b in batches])
    assert ids[mask == 1].tolist() == [i.encode() for i in good_ids]
    # the lost last record rides on a padding row (mask 0) after the last real example
    assert skipped.tolist() == [0, 0, 0, 0, 2, 0, 0, 1]
    assert mask.tolist() == [1.0] * 7 + [0.0]
