"""Writer (sharding, cleaning, stats), schema errors and --validate-style checks."""
import json
import os

import pytest
import tensorflow as tf

from basic_tf.data import schema, validate, writer
from data_helpers import make_records, write_bad_shard


def test_shards_are_bounded_by_size_and_stats_add_up(tmp_path):
    records = make_records(40)
    sizes = [len(schema.encode_record(r)) + 16 for r in records]
    limit = 3 * max(sizes)
    summary = writer.write_tfrecords(records, str(tmp_path / "s" / "train"),
                                     max_shard_bytes=limit, show_progress=False)
    n = len(summary.shards)
    assert n >= sum(sizes) // limit and summary.written == 40
    assert summary.shards == [str(tmp_path / "s" / f"train-{i:05d}-of-{n:05d}.tfrecord")
                              for i in range(n)]
    total, ids = 0, []
    for shard in summary.shards:
        assert os.path.getsize(shard) <= limit
        stats = writer.read_shard_stats(shard)
        read = validate.read_records(shard)
        assert stats["num_records"] == len(read) and stats["num_bytes"] == os.path.getsize(shard)
        assert stats["first_id"] == read[0].example_id and stats["last_id"] == read[-1].example_id
        assert stats["num_captions"] == 2 * len(read)
        total += len(read)
        ids += [r.example_id for r in read]
    assert total == 40 and ids == [r.example_id for r in records]  # order kept
    saved = json.loads((tmp_path / "s" / "train.summary.json").read_text())
    assert saved["written"] == 40 and saved["shards"] == summary.shards
    # the writer's sidecars are not shards
    assert schema.list_shards(str(tmp_path / "s" / "train-*")) == summary.shards


def test_cleaning_counts_every_skip(tmp_path):
    good = make_records(3)
    image = good[0].image
    records = [
        schema.Record(image, ["A  cat.", "a cat.", " ", "a dog"], "dup-captions"),
        schema.Record(image, ["a CAT.", "a dog"], "dup-record"),          # same image+captions
        schema.Record(image, ["", "   "], "no-caption"),
        schema.Record(image[: len(image) // 3], ["broken"], "bad-image"),  # truncated JPEG
        good[1], good[2],
    ]
    summary = writer.write_tfrecords(records, str(tmp_path / "c"), show_progress=False)
    assert (summary.written, summary.duplicate_records, summary.duplicate_captions,
            summary.empty_captions, summary.empty_records, summary.bad_images) == (3, 1, 1, 3, 1, 1)
    read = validate.read_records(summary.shards[0])
    assert read[0].captions == ["A  cat.", "a dog"]
    assert [r.example_id for r in read] == ["dup-captions", "ex/0001", "ex/0002"]


def test_schema_errors_name_shard_record_and_field():
    rec = make_records(1)[0]
    ok = schema.encode_record(rec)
    assert schema.decode_record(ok, "s.tfrecord", 3) == rec
    ex = tf.train.Example.FromString(ok)
    del ex.features.feature[schema.ID_KEY]
    with pytest.raises(schema.SchemaError, match=r"s.tfrecord record 7: missing field 'id'"):
        schema.decode_record(ex.SerializeToString(), "s.tfrecord", 7)
    ex = tf.train.Example.FromString(ok)
    ex.features.feature[schema.FORMAT_KEY].bytes_list.value[0] = b"png"
    with pytest.raises(schema.SchemaError, match=r"record 2: field 'image/encoded' does not "
                                                 "start like a png"):
        schema.decode_record(ex.SerializeToString(), "s", 2)
    with pytest.raises(schema.SchemaError, match="not JPEG, PNG or WebP"):
        schema.encode_record(schema.Record(b"GIF89a...", ["x"], "id"), where="row 4")
    with pytest.raises(schema.SchemaError, match="row 4: field 'caption' is empty"):
        schema.encode_record(schema.Record(rec.image, [], "id"), where="row 4")


def test_validate_reports_corrupt_empty_and_truncated(tmp_path):
    path = str(tmp_path / "bad.tfrecord")
    good_ids, n_rows = write_bad_shard(path)
    report = validate.validate_shards([path])
    assert report.records == n_rows - 1 and report.ok == len(good_ids)
    assert report.counts() == {"corrupt_image": 1, "empty_caption": 1, "truncated": 1,
                               "count_mismatch": 1}
    text = str(report)
    assert f"{path} record 4: corrupt_image: id 'bad/corrupt'" in text
    assert f"{path} record 5: empty_caption" in text
    assert f"read {n_rows - 1} records, stats file says {n_rows}" in text
    with pytest.raises(ValueError, match=r"bad.tfrecord: truncated or corrupt after record"):
        validate.read_records(path)
