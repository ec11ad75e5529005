"""Helpers of the training tests: tiny labelled image-text shards, gin bindings, event reading."""
import glob
import os

import numpy as np
import tensorflow as tf
from PIL import Image
import io

from basic_tf.data import schema, tokenizer, writer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}


def _jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_tiny_data(directory: str, n: int = 96, shards: int = 2) -> dict:
    """n records in `shards` shards: a noisy 36x36 image of one of 4 colours, captions naming the
    colour (a learnable pairing), label = colour index; and a SentencePiece model of the
    captions."""
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    records = []
    for i in range(n):
        label = i % len(names)
        image = np.clip(np.array(COLOURS[names[label]])[None, None, :]
                        + rng.normal(0, 25, (36, 36, 3)), 0, 255).astype(np.uint8)
        records.append(schema.Record(
            image=_jpeg(image), example_id=f"ex/{i:04d}", label=label, label_name=names[label],
            captions=[f"a {names[label]} square number {i}", f"{names[label]} picture {i}"]))
    part = n // shards
    for k in range(shards):
        writer.write_tfrecords(records[k * part:(k + 1) * part if k + 1 < shards else n],
                               os.path.join(directory, f"train-{'abcdefgh'[k]}"),
                               show_progress=False)
    sp = tokenizer.train_sentencepiece([c for r in records for c in r.captions],
                                       os.path.join(directory, "sp"), vocab_size=60)
    return {"pattern": os.path.join(directory, "train-*.tfrecord"), "tokenizer": sp}


def bindings(data: dict, global_batch_size: int = 16, **train_kwargs) -> list:
    """gin bindings for models/tiny.gin + the tiny data; train_kwargs become `train.<k> = <v>`."""
    out = [f"make_dataset.file_pattern = '{data['pattern']}'",
           f"make_dataset.tokenizer_path = '{data['tokenizer']}'",
           f"make_dataset.global_batch_size = {global_batch_size}",
           "make_dataset.image_size = 32",
           "make_dataset.seq_len = 16",
           "make_dataset.shuffle_buffer = 64",
           "make_dataset.log_skipped = False",
           "make_optimizer.kind = 'adamw'",
           "make_optimizer.learning_rate = 3e-3",
           "make_optimizer.weight_decay = 1e-4"]
    out += [f"train.{k} = {v!r}" for k, v in train_kwargs.items()]
    return out


def scalar_events(directory: str, tag: str) -> list:
    """[(event file, {step: value})] for a scalar tag in the TensorBoard files of `directory`,
    files without the tag left out (in the order written)."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        values = {}
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for v in event.summary.value:
                    if v.tag == tag:
                        values[event.step] = float(tf.make_ndarray(v.tensor)) if v.HasField(
                            "tensor") else v.simple_value
        except tf.errors.DataLossError:  # a killed writer's last record
            pass
        if values:
            out.append((path, values))
    return out


def all_tags(directory: str) -> set:
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def checkpoint_values(path: str, prefix: str) -> dict:
    """{key: array} of a checkpoint's variables whose key starts with `prefix`."""
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k, _ in tf.train.list_variables(path)
            if k.startswith(prefix) and k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
            and "OPTIMIZER_SLOT" not in k}

