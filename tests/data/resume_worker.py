"""Restores a pipeline iterator from a checkpoint in a fresh process and saves its next batches.

Run by test_data_pipeline_resume.py: python3 resume_worker.py <config.json>... Each config has
"data" (DataConfig fields), "kwargs" (the other make_dataset arguments), "checkpoint", "out"
(.npz), "steps", and "mirrored" (use CheckpointableDistributedIterator over that many virtual
CPUs, else a plain iterator).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def flatten(batch, strategy=None):
    """dict of (Per-replica) tensors -> dict of numpy arrays (replicas concatenated)."""
    out = {}
    for key, value in batch.items():
        parts = strategy.experimental_local_results(value) if strategy else [value]
        value = np.concatenate([p.numpy() for p in parts])
        out[key] = value.astype(bytes) if value.dtype == object else value  # npz-safe strings
    return out


def make_iterator(fields, kwargs, mirrored):
    from basic_tf.data import distributed, pipeline
    from basic_tf.data.data_config import DataConfig

    data = DataConfig(**fields)
    if not mirrored:
        return iter(pipeline.make_dataset(None, data, training=True, **kwargs)), None
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(mirrored)])
    return distributed.CheckpointableDistributedIterator(
        strategy, lambda ctx: pipeline.make_dataset(ctx, data, training=True, **kwargs)), strategy


def restore_and_continue(config):
    it, strategy = make_iterator(config["data"], config["kwargs"], config["mirrored"])
    tf.train.Checkpoint(data=it).read(config["checkpoint"]).assert_consumed()
    batches = [flatten(next(it), strategy) for _ in range(config["steps"])]
    np.savez(config["out"], **{f"{i}/{k}": v for i, b in enumerate(batches)
                               for k, v in b.items()})


def main(config_paths):
    configs = []
    for path in config_paths:
        with open(path) as f:
            configs.append(json.load(f))
    devices = max(c["mirrored"] for c in configs)
    if devices:  # virtual CPUs must exist before TensorFlow initialises
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    for config in configs:
        restore_and_continue(config)


if __name__ == "__main__":
    main(sys.argv[1:])
