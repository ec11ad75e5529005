"""make_dataset(record_format='img2dataset'): img2dataset's TFRecords read as they are, with
skips by cause, bounds, per-host sharding and exact resume as for our own shards."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import img2dataset, pipeline, skips, tokenizer
from basic_tf.data.data_config import DataConfig
from data_helpers import webp_claiming
from web_helpers import FORMATS, caption, img2dataset_example, write_img2dataset_shard


def build(pattern, sp_model, training=True, context=None, **kwargs):
    data = DataConfig(image_size=16, seq_len=10, tokenizer_path=sp_model)
    args = dict(file_pattern=pattern, global_batch_size=4, shuffle_buffer=16, cycle_length=2,
                log_skipped=False, record_format="img2dataset", seed=5)
    args.update(kwargs)
    return pipeline.make_dataset(context, data, training=training, **args)


@pytest.fixture(scope="module")
def i2d_shards(tmp_path_factory):
    """3 shards of 8 records, image formats and the metadata column's type flipping."""
    d = tmp_path_factory.mktemp("i2d")
    for s in range(3):
        write_img2dataset_shard(str(d / f"{s:05d}.tfrecord"), [
            img2dataset_example(8 * s + j, FORMATS[j % 4]) for j in range(8)])
    return str(d / "*.tfrecord")


def _one_pass(ds):
    ids, texts, by_cause = [], [], np.zeros(skips.NUM_CAUSES, int)
    for batch in ds:
        keep = batch["mask"].numpy() > 0
        ids += [i.decode() for i in batch["example_id"].numpy()[keep]]
        texts += list(batch["token_ids"].numpy()[keep])
        by_cause += batch["skipped_by_cause"].numpy().sum(0)
        assert (batch["labels"].numpy() == -1).all()
    return ids, texts, by_cause


def test_reads_every_format_with_key_as_id_and_txt_as_caption(i2d_shards, sp_model):
    ids, texts, by_cause = _one_pass(build(i2d_shards, sp_model, training=False))
    assert sorted(ids) == [f"{i:09d}" for i in range(24)] and by_cause.sum() == 0
    tok = tokenizer.Tokenizer(sp_model, 10)
    for example_id, row in zip(ids, texts):
        np.testing.assert_array_equal(row, tok([caption(int(example_id))]).numpy()[0])
    batch = next(iter(build(i2d_shards, sp_model)))
    assert batch["images"].shape == (4, 16, 16, 3) and batch["images"].numpy().std() > 0.05


def test_bad_records_are_skipped_and_counted_by_cause(tmp_path, sp_model):
    rows = [img2dataset_example(0), img2dataset_example(1, text="   "),          # empty txt
            img2dataset_example(2, text="", fields={"caption": b"from caption"}),  # fallback
            img2dataset_example(3, fields={"jpg": None}),                       # no image
            img2dataset_example(4, "webp", fields={"webp": webp_claiming(12000, 12000)}),
            img2dataset_example(5, "webp", fields={"webp": b"RIFF\x10\x00\x00\x00WEBPVP8 "}),
            img2dataset_example(6, fields={"txt": tf.train.Feature(
                int64_list=tf.train.Int64List(value=[3]))}),                    # txt not text
            b"not an example", img2dataset_example(8)]
    path = write_img2dataset_shard(str(tmp_path / "00000.tfrecord"), rows)
    ids, texts, by_cause = _one_pass(build(path, sp_model, training=False,
                                           max_skipped_fraction=None))
    assert sorted(ids) == ["000000000", "000000002", "000000008"]
    expected = np.zeros(skips.NUM_CAUSES, int)
    expected[[skips.EMPTY_CAPTION, skips.BAD_IMAGE, skips.TOO_LARGE, skips.PARSE_ERROR]] = \
        [1, 2, 1, 2]
    np.testing.assert_array_equal(by_cause, expected)


def test_truncated_shard_counted_from_img2dataset_stats(tmp_path, sp_model):
    path = write_img2dataset_shard(str(tmp_path / "00000.tfrecord"),
                                   [img2dataset_example(i) for i in range(6)])
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-50])
    assert img2dataset.expected_records(path) == 6
    ids, _, by_cause = _one_pass(build(path, sp_model, training=False))
    assert len(ids) == 5 and by_cause[skips.TRUNCATED] == 1 and by_cause.sum() == 1


def test_per_host_sharding_splits_the_files(i2d_shards, sp_model):
    seen = []
    for host in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=host,
                                         num_replicas_in_sync=2)
        ids, _, _ = _one_pass(build(i2d_shards, sp_model, training=False, context=ctx,
                                    global_batch_size=4))
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 24


def test_checkpointed_iterator_resumes_exactly(i2d_shards, sp_model, tmp_path):
    it = iter(build(i2d_shards, sp_model))
    for _ in range(3):
        next(it)
    tf.train.Checkpoint(data=it).write(str(tmp_path / "ckpt"))
    expected = [next(it) for _ in range(4)]
    again = iter(build(i2d_shards, sp_model))
    tf.train.Checkpoint(data=again).read(str(tmp_path / "ckpt")).assert_consumed()
    for want in expected:
        got = next(again)
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


def test_unknown_record_format_is_named(i2d_shards, sp_model):
    with pytest.raises(ValueError, match="^make_dataset.record_format='webdataset'"):
        build(i2d_shards, sp_model, record_format="webdataset")


def test_python_reader_and_format_detection(i2d_shards, tmp_path):
    shard = sorted(tf.io.gfile.glob(i2d_shards))[0]
    assert img2dataset.detect_record_format(shard) == "img2dataset"
    record = img2dataset.decode_record(img2dataset_example(2, "png"), shard, 0)
    assert record.example_id == "000000002" and record.captions == [caption(2)]
    assert record.image_format == "png" and '"url"' in record.metadata
    other = str(tmp_path / "other.tfrecord")
    with tf.io.TFRecordWriter(other) as w:
        w.write(tf.train.Example().SerializeToString())
    with pytest.raises(ValueError, match="^" + other):
        img2dataset.detect_record_format(other)


def test_to_shards_counts_unreadable_and_cut_records(tmp_path):
    """The Python conversion (new-experiment's img2dataset --eval): a record without image and
    a shard cut mid-frame are skipped and counted by cause; the rest is written in our schema."""
    rows = [img2dataset_example(i, FORMATS[i % 4]) for i in range(6)]
    rows[1] = img2dataset_example(1, "jpg", fields={"jpg": None})   # failed download: no image
    path = write_img2dataset_shard(str(tmp_path / "00000.tfrecord"), rows)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) - len(rows[5]) // 2])     # cut inside record 5
    summary = img2dataset.to_shards(path, str(tmp_path / "out/eval"))
    assert summary.skipped_sources == {"unreadable": 1, "truncated": 1}
    assert summary.written == 4
    from basic_tf.data import validate
    ids = [r.example_id for s in summary.shards for r in validate.read_records(s)]
    assert ids == ["000000000", "000000002", "000000003", "000000004"]


def test_profile_counts_records_it_cannot_read(tmp_path):
    """new-experiment profiles img2dataset shards as they are: a failed download and a WebP
    Pillow cannot open are counted, not raised."""
    from basic_tf.data import profile

    rows = [img2dataset_example(i, FORMATS[i % 4]) for i in range(4)]
    rows += [img2dataset_example(8, "jpg", fields={"jpg": None}),
             img2dataset_example(9, "webp", fields={"webp": b"RIFF\x20\x00\x00\x00WEBPVP8 x"})]
    write_img2dataset_shard(str(tmp_path / "00000.tfrecord"), rows)
    found = profile.profile_shards(str(tmp_path / "*.tfrecord"))
    assert (found.record_format, found.records, found.unreadable) == ("img2dataset", 4, 2)
    assert "2 records skipped" in found.describe().splitlines()[0]
