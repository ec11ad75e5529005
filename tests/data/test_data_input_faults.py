"""Input faults of the pipeline, each injected: empty or all-bad shards stop within seconds with a
message naming the pattern (they spun forever), skips are counted by cause, the skipped fraction
is bounded, oversized images are skipped before decoding and long captions cut."""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import limits, pipeline, schema, skips
from basic_tf.data.data_config import DataConfig
from data_helpers import (jpeg_bytes, make_records, png_claiming, random_image, write_bad_shard,
                          write_shard)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SMALL = dict(global_batch_size=2, shuffle_buffer=4, cycle_length=2, log_skipped=False)
DATA = dict(image_size=16, seq_len=8)  # with tokenizer_path: the DataConfig fields


def first_batches_in_subprocess(configs):
    """first_batch_worker.py's output line per make_dataset kwargs in `configs` (one process;
    "data": the DataConfig fields); a hang fails the test at 150 s."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, HERE]))
    try:
        out = subprocess.run([sys.executable, os.path.join(HERE, "first_batch_worker.py"),
                              json.dumps([dict(SMALL, **c) for c in configs])],
                             capture_output=True, text=True, env=env, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("a pipeline over all-bad shards gave neither a batch nor an error in 150 s")
    lines = [line for line in out.stdout.splitlines() if line.startswith(("ERROR", "BATCH"))]
    assert len(lines) == len(configs), out.stderr[-2000:]
    return lines


def corrupt_jpeg(seed=99):
    data = jpeg_bytes(random_image(seed, 32, 32))
    return data[:200] + b"\x00\x11" * 300 + data[-2:]  # valid header, garbage body


def build(pattern, sp_model, training, **kwargs):
    return pipeline.make_dataset(None, DataConfig(**DATA, tokenizer_path=sp_model),
                                 training=training, **dict(SMALL, file_pattern=pattern, **kwargs))


def test_zero_byte_shards_fail_up_front_naming_the_pattern(tmp_path, sp_model):
    for k in range(2):
        (tmp_path / f"empty-{k}.tfrecord").write_bytes(b"")
    pattern = str(tmp_path / "empty-*.tfrecord")
    with pytest.raises(ValueError, match="all 2 matching file") as e:
        build(pattern, sp_model, training=True)  # (never iterated: it spun forever)
    assert str(e.value).startswith(f"file_pattern {pattern!r}")


def test_pattern_matching_a_directory_fails_naming_it(tmp_path, sp_model):
    (tmp_path / "shards").mkdir()
    with pytest.raises(ValueError, match="shards', which is a directory"):
        build(str(tmp_path / "shard*"), sp_model, training=True)


@pytest.fixture(scope="module")
def all_bad_runs(tmp_path_factory, sp_model):
    """Training pipelines over shards where no record is usable, run in one subprocess:
    {"undecodable": line (no skipped-fraction bound), "unparsable": line (default bound)}."""
    d = tmp_path_factory.mktemp("all_bad")
    for k in range(2):  # every record parses but no image decodes: nothing ever reaches a batch
        write_shard(str(d / f"bad-{k}.tfrecord"),
                    [schema.Record(corrupt_jpeg(k), ["x"], f"bad/{k}/{i}") for i in range(3)])
    write_shard(str(d / "junk-0.tfrecord"), [b"not an Example %d" % i for i in range(6)])
    configs = {"undecodable": dict(file_pattern=str(d / "bad-*.tfrecord"),
                                   max_skipped_fraction=None),
               "unparsable": dict(file_pattern=str(d / "junk-*.tfrecord"))}
    lines = first_batches_in_subprocess(
        [dict(c, data=dict(DATA, tokenizer_path=sp_model)) for c in configs.values()])
    return {name: (c["file_pattern"], line) for (name, c), line in zip(configs.items(), lines)}


def test_shards_of_only_undecodable_images_stop_within_seconds(all_bad_runs):
    pattern, line = all_bad_runs["undecodable"]
    assert line.startswith("ERROR") and f"file_pattern '{pattern}'" in line, line
    assert "no usable record in a whole pass over its 2 file(s)" in line
    assert "bad_image=" in line and "parse_error=0" in line
    assert float(line.split()[1]) < 20  # seconds, not forever


def test_shards_of_unparsable_records_stop_at_the_skipped_fraction_bound(all_bad_runs):
    pattern, line = all_bad_runs["unparsable"]
    assert line.startswith("ERROR") and f"file_pattern '{pattern}'" in line, line
    n = re.search(r"(\d+) of \1 records read were skipped", line)  # >= 6: the first pass
    assert n and int(n.group(1)) >= 6, line
    assert "make_dataset.max_skipped_fraction=0.5" in line
    assert f"parse_error={n.group(1)}, bad_image=0" in line
    assert float(line.split()[1]) < 20


def test_evaluation_of_only_bad_records_fails_instead_of_returning_nothing(tmp_path, sp_model):
    path = write_shard(str(tmp_path / "bad.tfrecord"),
                       [schema.Record(corrupt_jpeg(), ["x"], f"bad/{i}") for i in range(3)])
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        list(build(path, sp_model, training=False, max_skipped_fraction=None))
    message = skips.input_error_message(e.value)
    assert message and path in message and "3 records read, 0 usable" in message, message


def mixed_shard(path):
    """write_bad_shard (4 good, corrupt image, empty caption, 3 good, truncated tail) plus, in a
    second shard, an unparsable record and an image whose header claims 12000x12000 pixels."""
    good_ids, _ = write_bad_shard(path + "-0")
    rows = make_records(2)
    rows.insert(1, b"not an Example")
    rows.append(schema.Record(png_claiming(12000, 12000), ["huge canvas"], "bad/huge"))
    write_shard(path + "-1", rows)
    return good_ids + [r.example_id for r in rows[::2]]


def test_skips_are_counted_by_cause_in_training(tmp_path, sp_model):
    good = mixed_shard(str(tmp_path / "mixed"))
    ds = build(str(tmp_path / "mixed-*"), sp_model, training=True, global_batch_size=3,
               max_skipped_fraction=None)
    counter = pipeline.SkippedRecordsCounter()
    ids = []
    for batch in ds.take(3 * len(good) // 3):  # three passes
        counter.update(batch)
        assert batch["skipped_by_cause"].shape == (3, len(skips.SKIP_CAUSES))
        np.testing.assert_array_equal(batch["skipped"],
                                      np.sum(batch["skipped_by_cause"], axis=1))
        ids += [i.decode() for i in batch["example_id"].numpy()]
    assert set(ids) == set(good)
    out = counter.summaries()
    by_cause = {c: out[f"skipped_records/{c}"] for c in skips.SKIP_CAUSES}
    # 3 passes minus what is still in the shuffle buffer: each cause 2 or 3 times
    assert all(2 <= n <= 3 for n in by_cause.values()), by_cause
    assert out["skipped_records"] == sum(by_cause.values())


def test_evaluation_counts_each_cause_once(tmp_path, sp_model):
    good = mixed_shard(str(tmp_path / "mixed"))
    batches = list(build(str(tmp_path / "mixed-*"), sp_model, training=False,
                         global_batch_size=4, max_skipped_fraction=None))
    mask = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([b["example_id"] for b in batches])[mask == 1]
    assert sorted(i.decode() for i in ids) == sorted(good)
    total = np.concatenate([b["skipped_by_cause"] for b in batches]).sum(axis=0)
    assert dict(zip(skips.SKIP_CAUSES, total.tolist())) == {
        "parse_error": 1, "bad_image": 1, "empty_caption": 1, "too_large": 1, "truncated": 1}


def test_skipped_fraction_bound_stops_training_naming_bound_causes_and_pattern(tmp_path,
                                                                               sp_model):
    rows = make_records(3) + [schema.Record(corrupt_jpeg(i), ["x"], f"bad/{i}")
                              for i in range(5)]
    path = write_shard(str(tmp_path / "mostly-bad.tfrecord"), rows)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        for _ in build(path, sp_model, training=True, max_skipped_fraction=0.25).take(50):
            pass
    message = skips.input_error_message(e.value)
    assert message and message.startswith("input pipeline stopped: file_pattern")
    assert path in message and "make_dataset.max_skipped_fraction=0.25" in message
    assert "bad_image=" in message and "too_large=0" in message
    # below the bound the same shards train on
    assert len(list(build(path, sp_model, training=True, max_skipped_fraction=0.8).take(50)))


def test_oversized_images_are_skipped_before_decoding_in_training_and_evaluation(tmp_path,
                                                                                 sp_model):
    rows = make_records(4, fmt="png")  # 20x24 = 480 pixels each
    rows[1] = schema.Record(png_claiming(12000, 12000), ["a huge canvas"], "bad/huge")
    path = write_shard(str(tmp_path / "huge.tfrecord"), rows)
    bound = limits.input_limits(max_image_pixels=500)
    evaluation = list(build(path, sp_model, training=False, max_skipped_fraction=None,
                            limits=bound))
    training = list(build(path, sp_model, training=True, global_batch_size=3,
                          max_skipped_fraction=None, limits=bound).take(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="0 usable"):  # every image too large
        list(build(path, sp_model, training=False, max_skipped_fraction=None,
                   limits=limits.input_limits(max_image_pixels=400)))
    too_large = skips.SKIP_CAUSES.index("too_large")
    for batches in (evaluation, training):
        counts = np.concatenate([b["skipped_by_cause"] for b in batches]).sum(axis=0)
        assert counts[too_large] >= 1 and counts.sum() == counts[too_large], counts
        ids = np.concatenate([b["example_id"] for b in batches]).tolist()
        assert b"bad/huge" not in ids


def test_long_caption_is_cut_before_tokenisation_and_counted(tmp_path, sp_model):
    rows = make_records(2)
    rows[0] = schema.Record(rows[0].image, ["red thing " * 50_000], "long/0")  # 500 KB
    path = write_shard(str(tmp_path / "long.tfrecord"), rows)
    start = time.perf_counter()
    batches = list(build(path, sp_model, training=False))
    assert time.perf_counter() - start < 30  # uncut: minutes of SentencePiece
    assert np.concatenate([b["captions_cut"] for b in batches]).tolist() == [1, 0]
    counter = pipeline.SkippedRecordsCounter()
    for b in batches:
        counter.update(b)
    assert counter.summaries()["captions_cut"] == 1
