"""The tf.data input pipeline: TFRecord shards -> batches of images, token ids and labels.

    files (this host's share) -> [train: shuffle files, repeat] -> interleave shard readers
    -> [train: shuffle records] -> number each record -> parse + decode/crop/flip (parallel)
    -> skip bad records (and count them) -> batch -> tokenize captions per batch -> prefetch

Graph-only (no py_function), static shapes, deterministic: the random crop, flip and caption
choice are stateless, keyed by (seed, record number), so a restored iterator
(`tf.train.Checkpoint(iterator=...)`) continues with exactly the batches it would have given.

Bad records never stop a run. A record that fails to parse, has no non-empty caption or whose
image does not decode raises inside the parallel map; `ignore_errors` drops it, and the gap it
leaves in the record numbers is counted. A truncated shard's lost tail is counted from the
shard's stats sidecar (written by basic_tf.data.writer). Each example carries "skipped": how many
records were dropped just before it, so the sum over consumed batches is the exact number of
records skipped so far (`SkippedRecordsCounter` keeps that sum, reduced over replicas).

Each batch (b = per-replica batch size):
  images     float32 [b, H, W, 3] in [0, 1]
  token_ids  int32 [b, L], padding 0, EOS last (basic_tf.data.tokenizer)
  labels     int32 [b], -1 for unlabelled records
  mask       float32 [b], 1 real example, 0 padding (only in evaluation's last batches)
  skipped    int32 [b], records dropped just before each example
  example_id tf.string [b] (left out with string_features=False, e.g. for TPU infeed)

Evaluation (training=False): centre crop, first caption, no shuffle, one pass; the tail is padded
(mask 0) up to a whole step of all replicas this pipeline feeds, so every replica gets a batch.
"""
import functools
from typing import Optional, Sequence, Union

import gin
import tensorflow as tf

from basic_tf.data import augment, schema, writer
from basic_tf.data.tokenizer import Tokenizer

# Kinds of elements between the shard readers and the decoder.
_RECORD, _TRUNCATION, _END = 0, 1, 2


def shard_for_pipeline(files: Sequence[str], input_context) -> list:
    """This input pipeline's files: every num_input_pipelines-th file from input_pipeline_id."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return list(files)
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) < n:
        raise ValueError(f"{len(files)} shard files for {n} input pipelines (hosts): each "
                         f"pipeline needs >= 1 file; write >= {n} shards (smaller "
                         "--max_shard_mb in tools/make_tfrecords.py)")
    return list(files[i::n])


def _read_shard(path: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
    """One shard's records as elements; a TRUNCATION element follows if records were lost.

    expected: int64 record count from the stats sidecar, -1 if unknown (then a truncated tail
    cannot be counted).
    """
    records = tf.data.TFRecordDataset(path).ignore_errors()  # stops at a bad frame
    records = records.map(
        lambda r: {"record": r, "kind": _RECORD, "missing": tf.constant(0, tf.int64)})
    end = tf.data.Dataset.from_tensors({"record": tf.constant(""), "kind": _TRUNCATION,
                                        "missing": tf.constant(0, tf.int64)})

    def count(n, element):
        is_record = element["kind"] == _RECORD
        missing = tf.where(is_record | (expected < 0), tf.constant(0, tf.int64),
                           tf.maximum(expected - n, 0))
        out = dict(element, missing=missing, source=path, offset=n)
        return n + tf.cast(is_record, tf.int64), out

    ds = records.concatenate(end).scan(tf.constant(0, tf.int64), count)
    return ds.filter(lambda e: (e["kind"] == _RECORD) | (e["missing"] > 0))


def _decode(index, element, *, training, seed, image_size, area_range, aspect_ratio_range,
            random_flip, eval_crop_fraction, antialias):
    """(record number, element) -> example dict; raises (-> skipped) for a bad record."""
    def real():
        ex = schema.parse_example(element["record"])
        captions = tf.strings.strip(ex[schema.CAPTION_KEY])
        captions = tf.boolean_mask(captions, tf.strings.length(captions) > 0)
        n = tf.size(captions)
        check = tf.debugging.Assert(n > 0, ["no non-empty caption in", element["source"],
                                            "record", element["offset"]])
        with tf.control_dependencies([check]):
            if training:
                key = tf.stack([tf.cast(seed, tf.int64), index])
                caption_seed, image_seed = tf.unstack(
                    tf.random.experimental.stateless_split(key, 2))
                pick = tf.random.stateless_uniform([], caption_seed, 0, n, dtype=tf.int32)
                image = augment.decode_and_random_crop(
                    ex[schema.IMAGE_KEY], image_seed, image_size, area_range,
                    aspect_ratio_range, random_flip, antialias)
            else:
                pick = 0
                image = augment.decode_and_center_crop(ex[schema.IMAGE_KEY], image_size,
                                                       eval_crop_fraction, antialias)
            caption = captions[pick]
        return (image, caption, tf.cast(ex[schema.LABEL_KEY], tf.int32),
                ex[schema.ID_KEY], tf.constant(1.0))

    def placeholder():
        return (tf.zeros([image_size, image_size, 3]), tf.constant(""),
                tf.constant(schema.NO_LABEL), tf.constant(""), tf.constant(0.0))

    image, caption, label, example_id, mask = tf.cond(element["kind"] == _RECORD, real,
                                                      placeholder)
    return {"index": index, "kind": element["kind"], "missing": element["missing"],
            "images": tf.ensure_shape(image, [image_size, image_size, 3]), "caption": caption,
            "labels": label, "example_id": example_id, "mask": mask}


def _count_skipped(state, example):
    """Scan: skipped = records missing since the previous emitted example (gaps in the record
    numbers left by ignore_errors, plus lost shard tails), carried over TRUNCATION elements."""
    last, pending = state
    total = pending + example["index"] - last - 1 + example["missing"]
    carry = example["kind"] == _TRUNCATION
    out = {k: v for k, v in example.items() if k not in ("index", "missing")}
    out["skipped"] = tf.cast(tf.where(carry, tf.constant(0, tf.int64), total), tf.int32)
    return (example["index"], tf.where(carry, total, 0)), out


@gin.configurable(denylist=["input_context", "training"])
def make_dataset(input_context: Optional[tf.distribute.InputContext] = None, *,
                 training: bool = True,
                 file_pattern: Union[str, Sequence[str]] = gin.REQUIRED,
                 eval_file_pattern: Union[str, Sequence[str], None] = None,
                 global_batch_size: int = gin.REQUIRED,
                 eval_global_batch_size: Optional[int] = None,
                 image_size: int = 224,
                 seq_len: int = 64,
                 tokenizer_path: str = gin.REQUIRED,
                 shuffle_buffer: int = 10_000,
                 seed: int = 0,
                 cycle_length: int = 8,
                 area_range: Sequence[float] = (0.5, 1.0),
                 aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                 random_flip: bool = True,
                 eval_crop_fraction: float = 1.0,
                 antialias: bool = False,
                 string_features: bool = True,
                 log_skipped: bool = True) -> tf.data.Dataset:
    """Builds the (per-replica-batched) dataset for training or evaluation; see module doc.

    Args:
      input_context: from strategy.distribute_datasets_from_function; None = one pipeline,
        batch = global batch.
      training: random crops/captions, shuffled, repeated forever, drop_remainder; else one
        padded pass with centre crops and first captions.
      file_pattern / eval_file_pattern: shard glob(s) for training / evaluation
        (evaluation defaults to file_pattern).
      global_batch_size / eval_global_batch_size: summed over all replicas.
      seq_len, tokenizer_path: token ids length and SentencePiece model (tokenizer.py).
      shuffle_buffer, seed: record shuffle buffer and the seed of every random choice.
      cycle_length: shards read concurrently.
      area_range, aspect_ratio_range, random_flip: training crop and flip.
      eval_crop_fraction: centre square side as a fraction of the shorter image side.
      antialias: antialiased resize (better for large downscales, slower).
      string_features: include example_id (tf.string; TPU infeed cannot carry strings).
      log_skipped: log each skipped record's error (from tf.data, at warning level).
    """
    pattern = file_pattern if (training or eval_file_pattern is None) else eval_file_pattern
    batch_size = global_batch_size if training else (eval_global_batch_size or global_batch_size)
    files = shard_for_pipeline(schema.list_shards(pattern), input_context)
    per_replica = batch_size
    replicas_per_pipeline = 1
    if input_context is not None:
        if batch_size % input_context.num_replicas_in_sync:
            raise ValueError(f"global batch size {batch_size} is not divisible by the "
                             f"{input_context.num_replicas_in_sync} replicas in sync")
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        replicas_per_pipeline = max(
            input_context.num_replicas_in_sync // input_context.num_input_pipelines, 1)
    expected = [int((writer.read_shard_stats(f) or {"num_records": -1})["num_records"])
                for f in files]
    tokenizer = Tokenizer(tokenizer_path, seq_len)

    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(expected, tf.int64)))
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(_read_shard, cycle_length=min(cycle_length, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:  # an END element carries the count of records skipped at the very end
        ds = ds.concatenate(tf.data.Dataset.from_tensors(
            {"record": tf.constant(""), "kind": _END, "missing": tf.constant(0, tf.int64),
             "source": tf.constant(""), "offset": tf.constant(-1, tf.int64)}))
    ds = ds.enumerate()
    decode = functools.partial(
        _decode, training=training, seed=seed, image_size=image_size, area_range=area_range,
        aspect_ratio_range=aspect_ratio_range, random_flip=random_flip,
        eval_crop_fraction=eval_crop_fraction, antialias=antialias)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=log_skipped)
    ds = ds.scan((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)), _count_skipped)
    ds = ds.filter(lambda e: (e["kind"] == _RECORD) | ((e["kind"] == _END) & (e["skipped"] > 0)))
    ds = ds.map(lambda e: {k: v for k, v in e.items() if k != "kind"})
    if training:
        ds = ds.batch(per_replica, drop_remainder=True)
    else:
        ds = pad_to_batches(ds, per_replica, replicas_per_pipeline)

    def tokenize(batch):
        batch = dict(batch)
        batch["token_ids"] = tokenizer(batch.pop("caption"))
        if not string_features:
            batch.pop("example_id")
        return batch

    ds = ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    # The only state outside the dataset is the tokenizer's read-only SentencePiece model.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return ds.with_options(options)


def pad_to_batches(ds: tf.data.Dataset, batch_size: int, replicas: int = 1) -> tf.data.Dataset:
    """Examples -> batches of `batch_size` with a float32 "mask" (1 real, 0 padding; an
    example's own "mask" is kept).

    The tail is padded (images 0, strings "", "labels" NO_LABEL) up to a whole group of
    `replicas` batches, so each replica of a step gets a full, statically shaped batch and no
    example is dropped. Evaluation inputs of the data and zero-shot rooms both batch with it.
    """
    group = batch_size * replicas
    ds = ds.map(lambda ex: ex if "mask" in ex else dict(ex, mask=tf.constant(1.0)))

    def pad(elements):
        out = {}
        for key, value in elements.items():
            rest = value.shape[1:].as_list()
            fill = "" if value.dtype == tf.string else (schema.NO_LABEL if key == "labels" else 0)
            filler = tf.fill([group - tf.shape(value)[0]] + rest, tf.constant(fill, value.dtype))
            value = tf.concat([value, filler], axis=0)
            out[key] = tf.reshape(value, [replicas, batch_size] + rest)
        return out

    return ds.batch(group).map(pad).unbatch()


class SkippedRecordsCounter(tf.Module):
    """Running total of records the pipeline skipped, from the consumed batches' "skipped".

    Put it in the training checkpoint so the total survives a resume. Call `update` in
    cross-replica context (outside strategy.run), with the per-replica batch a distributed
    iterator returned (or a plain batch when no strategy is used).
    """

    def __init__(self, name: Optional[str] = None):
        super().__init__(name=name)
        self.total = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_records",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def update(self, batch: dict, strategy: Optional[tf.distribute.Strategy] = None) -> tf.Tensor:
        """Adds the batch's skipped records (summed over replicas); returns that int64 number."""
        skipped = batch["skipped"]
        if strategy is not None:
            n = strategy.reduce(tf.distribute.ReduceOp.SUM, skipped, axis=0)
        else:
            n = tf.reduce_sum(skipped)
        n = tf.cast(n, tf.int64)
        self.total.assign_add(n)
        return n
