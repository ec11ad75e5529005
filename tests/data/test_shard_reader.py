"""The shard reader's blocks: parse failures inside a block cost only their own records, and the
keyed random draws do not depend on what else is in a block."""
import numpy as np
import tensorflow as tf

from basic_tf.data import keyed_random, schema, shard_reader, skips
from data_helpers import make_records


def _rows(path, expected=-1, training=False):
    planner = shard_reader.BlockPlanner(record_format="basic_tf", training=training, seed=3,
                                        random_flip=True, max_image_pixels=10**6)
    ds = shard_reader.read_shard(tf.constant(0, tf.int64), tf.constant(0, tf.int64), path,
                                 tf.constant(expected, tf.int64), planner).unbatch()
    return list(ds.as_numpy_iterator())


def test_unparsable_records_inside_blocks_cost_only_themselves(tmp_path):
    """Records in several blocks and windows of blocks; four are not Examples (two in the first
    block, two side by side in a later one, one in the last window): the blocks they sit in are
    parsed again record by record, every good record arrives once, the four are BAD rows with
    cause parse_error, and the shard's end row comes once (records read again may come after
    the blocks read once: order within a shard is not kept then)."""
    count = 2 * shard_reader.BLOCK * shard_reader._WINDOW + 70  # the last window is partial
    broken = (5, shard_reader.BLOCK + 40, shard_reader.BLOCK + 41, count - 3)
    records = make_records(count)
    path = str(tmp_path / "mixed.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i, r in enumerate(records):
            w.write(b"\x08\x96\x01 not an Example" if i in broken else
                    schema.encode_record(r))
    rows = _rows(path, expected=count)
    good = sorted(r["example_id"].decode() for r in rows if r["kind"] == shard_reader.RECORD)
    assert good == sorted(r.example_id for i, r in enumerate(records) if i not in broken)
    bad = [r for r in rows if r["kind"] == shard_reader.BAD]
    assert [int(r["cause"]) for r in bad] == [skips.PARSE_ERROR] * len(broken)
    ends = [r for r in rows if r["kind"] == shard_reader.SHARD_END]
    assert len(ends) == 1 and ends[0]["missing"] == 0 and len(rows) == count + 1


def test_a_shard_of_only_unparsable_records_gives_bad_rows_and_its_end(tmp_path):
    path = str(tmp_path / "garbage.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for _ in range(40):
            w.write(b"\xff\xff garbage")
    rows = _rows(path, expected=45)
    kinds = sorted(int(r["kind"]) for r in rows)
    assert kinds == sorted([shard_reader.BAD] * 40 + [shard_reader.SHARD_END])
    assert sum(int(r["missing"]) for r in rows) == 5


def test_keyed_draws_depend_only_on_key_and_number():
    key = keyed_random.combine(0, 7, 2)
    whole = keyed_random.bits(key, tf.constant([1, 3, 5, 7], tf.int64), 4).numpy()
    part = keyed_random.bits(key, tf.constant([5, 3], tf.int64), 4).numpy()
    assert (part == whole[[2, 1]]).all()
    other = keyed_random.bits(keyed_random.combine(0, 8, 2), tf.constant([1], tf.int64), 4)
    assert (other.numpy() != whole[:1]).all()
    u = keyed_random.uniform(keyed_random.bits(key, tf.range(20000, dtype=tf.int64), 1)).numpy()
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    assert np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1] < 0.02
