"""Exact resume: checkpoint the data iterator mid-epoch, restore it in a new process, compare.

One subprocess restores both a plain iterator and a CheckpointableDistributedIterator over
MirroredStrategy (4 virtual CPUs); the data includes a shard with bad records, so the skip
counts must resume too.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import distributed, pipeline
from basic_tf.data.data_config import DataConfig
from data_helpers import write_bad_shard
from resume_worker import flatten
from strategies import mirrored_strategy

# Slow: the restore runs in a new Python process.
pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STEPS = 3


def _kwargs(pattern, bad):
    return dict(file_pattern=[pattern, bad], global_batch_size=8, shuffle_buffer=16,
                cycle_length=2, seed=11, log_skipped=False)


def _save_then_continue(it, strategy, path):
    """Saves the iterator, then returns the next STEPS batches (the expected resume)."""
    tf.train.Checkpoint(data=it).write(path)
    return [flatten(next(it), strategy) for _ in range(STEPS)]


def test_restore_in_a_new_process_gives_the_same_next_batches(shards_120, sp_model, tmp_path):
    pattern, _ = shards_120
    bad = str(tmp_path / "bad.tfrecord")
    write_bad_shard(bad)
    kwargs = _kwargs(pattern, bad)
    fields = dict(image_size=16, seq_len=8, tokenizer_path=sp_model)  # DataConfig's
    data = DataConfig(**fields)
    expected, configs = {}, []

    it = iter(pipeline.make_dataset(None, data, training=True, **kwargs))
    consumed = [next(it) for _ in range(11)]  # mid-epoch: 88 of 127 good records
    assert sum(int(b["skipped"].numpy().sum()) for b in consumed) <= 3
    expected["plain"] = _save_then_continue(it, None, str(tmp_path / "plain_ckpt"))

    strategy = mirrored_strategy(4)
    dit = distributed.CheckpointableDistributedIterator(
        strategy, lambda ctx: pipeline.make_dataset(ctx, data, training=True, **kwargs))
    for _ in range(5):
        next(dit)
    expected["mirrored"] = _save_then_continue(dit, strategy, str(tmp_path / "mirrored_ckpt"))

    for name, mirrored in (("plain", 0), ("mirrored", 4)):
        config = {"data": fields, "kwargs": kwargs, "checkpoint": str(tmp_path / f"{name}_ckpt"),
                  "out": str(tmp_path / f"{name}.npz"), "steps": STEPS, "mirrored": mirrored}
        configs.append((name, config))
    paths = []
    for name, config in configs:
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump(config, f)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, os.path.join(HERE, "resume_worker.py"), *paths],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name, _ in configs:
        got = np.load(tmp_path / f"{name}.npz")
        for i, batch in enumerate(expected[name]):
            for key, value in batch.items():
                np.testing.assert_array_equal(got[f"{i}/{key}"], value,
                                              err_msg=f"{name} batch {i} {key}")
