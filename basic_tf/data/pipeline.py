"""The tf.data input pipeline: TFRecord shards -> batches of images, token ids and labels.

Shards are basic_tf's own (basic_tf.data.schema) or img2dataset's TFRecords as they are
(`record_format='img2dataset'`, basic_tf.data.img2dataset).

    files (this host's share) -> [train: shuffle files, repeat] -> interleave shard readers
    -> [train: shuffle records] -> number each element -> parse -> number again -> bound +
    decode/crop/resize (parallel) -> batch -> count skipped records by cause (per batch) ->
    [train: rebatch | evaluation: pad] -> flip, scale, cut and tokenize captions (per batch)
    -> prefetch

Per-element work is kept to what cannot be done per batch: parsing and decoding (either can
fail, and a failing element must be dropped alone), the caption choice and the crop window; the
shard readers' and the accounting's bookkeeping, the flip, the scaling to [0, 1], the caption
cut and tokenization run on whole blocks or batches (issue 22: the per-element stages cost ~9x
the decode).

Graph-only (no py_function), static shapes, deterministic: the random crop, flip and caption
choice are stateless, keyed by (seed, record number), so a restored iterator
(`tf.train.Checkpoint(iterator=...)`) continues with exactly the batches it would have given.

Bad records never stop a run by themselves. A record that fails to parse or whose image does
not decode raises inside a parallel map; `ignore_errors` drops it, and the gap it leaves in the
element numbers is counted. A record with no non-empty caption, or an image with more pixels
than `input_limits.max_image_pixels` (read from its header, before decoding), is skipped without
decoding. A truncated shard's lost tail is counted from the shard's stats sidecar (written by
basic_tf.data.writer). Captions longer than `input_limits.max_caption_bytes` are cut before
tokenisation. Each example carries "skipped" and "skipped_by_cause": records dropped just before
it, so sums over consumed batches are exact (`SkippedRecordsCounter` keeps them, reduced over
replicas; causes in basic_tf.data.skips).

What does stop the pipeline, with a message naming the file pattern and the counts by cause:
files that are all empty (checked up front from sizes and sidecars), a whole pass with no
usable record (a repeated stream of bad records would otherwise spin forever), and more than
`max_skipped_fraction` of the records read skipped.

Each batch (b = per-replica batch size):
  images     float32 [b, H, W, 3] in [0, 1]
  token_ids  int32 [b, L], padding 0, EOS last (basic_tf.data.tokenizer)
  labels     int32 [b], -1 for unlabelled records
  mask       float32 [b], 1 real example, 0 padding (only in evaluation's last batches)
  skipped    int32 [b], records dropped just before each example
  skipped_by_cause int32 [b, C], the same by cause (C = len(skips.SKIP_CAUSES))
  captions_cut int32 [b], 1 where the example's caption was cut to max_caption_bytes
  example_id tf.string [b] (left out with string_features=False, e.g. for TPU infeed)

The image and text view (image size, seq_len, tokenizer, eval crop, antialias) is one argument,
`data` (basic_tf.data.data_config.DataConfig), the same object evaluation and export take.

Evaluation (training=False): centre crop, first caption, no shuffle, one pass; the tail is padded
(mask 0) up to a whole step of all replicas this pipeline feeds, so every replica gets a batch.
"""
import functools
from typing import Optional, Sequence, Union

import tensorflow as tf
from absl import logging

from basic_tf.data import augment, img2dataset, schema, skips, writer
from basic_tf.data import limits as limits_lib
from basic_tf.data.data_config import DataConfig
from basic_tf.data.skips import SkippedRecordsCounter  # noqa: F401 (its home was here)
from basic_tf.data.tokenizer import Tokenizer

# Kinds of elements between the shard readers and the accounting scan: a record, a shard's end
# (carries its lost tail), the end of an evaluation pass, a record skipped for a known cause.
_RECORD, _SHARD_END, _END, _BAD = 0, 1, 2, 3


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


_BLOCK = 32  # records a shard reader hands on at once (its bookkeeping is per block)


def _read_shard(path: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
    """One shard's records as elements, then one SHARD_END element carrying how many records
    were lost to a truncated tail ("missing").

    expected: int64 record count from the stats sidecar, -1 if unknown (then a truncated tail
    cannot be counted). SHARD_END elements are never dropped, so something reaches the
    accounting scan on every pass even when every record is bad (skips.account). The count
    runs over blocks of records (no per-record function), which are then unbatched.
    """
    blocks = tf.data.TFRecordDataset(path).ignore_errors().batch(_BLOCK)  # stops at a bad frame
    blocks = blocks.map(lambda r: (r, False)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant([""]), True)))

    def count(n, block):
        records, is_end = block
        m = tf.shape(records, out_type=tf.int64)[0]
        missing = tf.where(is_end & (expected >= 0), tf.maximum(expected - n, 0),
                           tf.constant(0, tf.int64))
        out = {"record": records,
               "kind": tf.fill([m], tf.where(is_end, _SHARD_END, _RECORD)),
               "missing": tf.fill([m], missing)}
        return n + tf.where(is_end, tf.constant(0, tf.int64), m), out

    return blocks.scan(tf.constant(0, tf.int64), count).unbatch()


def _parse_basic_tf(serialized):
    """tf.string [] -> (image, captions [n], label int32, id) of a basic_tf schema record."""
    ex = schema.parse_example(serialized)
    return (ex[schema.IMAGE_KEY], ex[schema.CAPTION_KEY],
            tf.cast(ex[schema.LABEL_KEY], tf.int32), ex[schema.ID_KEY])


_PARSERS = {"basic_tf": _parse_basic_tf, "img2dataset": img2dataset.parse_example}
# What a non-record element (shard end, pass end) is parsed as: an Example with empty required
# fields and no caption (no tf.cond per element).
_PLACEHOLDER = {
    "basic_tf": tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""]))
        for k in (schema.IMAGE_KEY, schema.FORMAT_KEY, schema.ID_KEY)})).SerializeToString(),
    "img2dataset": b""}


def _parse(index, element, record_format="basic_tf"):
    """(element number, element) -> parsed fields; raises (-> dropped, counted as parse_error)
    for a record that is not an Example of the record format."""
    is_record = element["kind"] == _RECORD
    record = tf.where(is_record, element["record"], _PLACEHOLDER[record_format])
    image, captions, label, example_id = _PARSERS[record_format](record)
    return {"index": index, "kind": element["kind"], "missing": element["missing"],
            "image": image, "captions": captions, "labels": label, "example_id": example_id}


def _decode(parse_index, element, *, training, seed, image_size, area_range,
            aspect_ratio_range, random_flip, eval_crop_fraction, antialias, limits):
    """(number after parsing, parsed element) -> example dict, the only per-example work: the
    caption choice, the image header check, decode + crop + resize. A record with no non-empty
    caption or too many pixels becomes kind BAD with its cause (nothing decoded); an image that
    does not decode raises (-> dropped, counted as bad_image). The image is unflipped ("flip"
    says whether to flip it), uint8 in training, float32 in [0, 255] in evaluation;
    `_finish_batch` does the rest per batch."""
    index, kind = element["index"], element["kind"]
    captions = tf.strings.strip(element["captions"])
    nonempty = tf.strings.length(captions) > 0
    n = tf.reduce_sum(tf.cast(nonempty, tf.int32))
    height_width = limits_lib.image_height_width(element["image"])  # [-1, -1] for "" (no record)
    cause = tf.where(n == 0, skips.EMPTY_CAPTION, tf.where(
        height_width[0] < 0, skips.BAD_IMAGE, tf.where(
            height_width[0] * height_width[1] > limits.max_image_pixels, skips.TOO_LARGE,
            skips.OK)))
    usable = (kind == _RECORD) & (cause == skips.OK)

    def real():
        image_bytes = element["image"]
        flip = tf.constant(False)
        if training:
            key = tf.stack([tf.cast(seed, tf.int64), index])
            caption_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            pick = tf.random.stateless_uniform([], caption_seed, 0, n, dtype=tf.int32)
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(image_seed, 2))
            image = augment.random_crop_window(image_bytes, crop_seed, image_size, area_range,
                                               aspect_ratio_range, antialias)
            if random_flip:
                flip = augment.flip_decision(flip_seed)
        else:
            pick = 0
            image = augment.center_crop_window(image_bytes, image_size, eval_crop_fraction,
                                               antialias)
        caption = tf.gather(captions, tf.where(nonempty)[pick, 0])
        return image, caption, flip

    def placeholder():
        return tf.zeros([image_size, image_size, 3]), tf.constant(""), tf.constant(False)

    image, caption, flip = tf.cond(usable, real, placeholder)
    if training:
        # uint8 from here to the batch's finish: 4x less to batch, filter and rebatch. Exact
        # when the window is not resized (the demo); else the resize's output rounded
        # (<= 0.5 / 255). Evaluation keeps float32, so it sees exactly what serving's
        # decode_and_center_crop gives (the export serves evaluate's predictions).
        image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    return {"index": index, "parse_index": parse_index,
            "kind": tf.where((kind == _RECORD) & ~usable, _BAD, kind),
            "missing": element["missing"], "cause": tf.cast(cause, tf.int32),
            "images": tf.ensure_shape(image, [image_size, image_size, 3]), "flip": flip,
            "caption": caption, "labels": element["labels"], "example_id": element["example_id"],
            "mask": tf.cast(usable, tf.float32)}


def _finish_batch(batch, tokenizer, max_caption_bytes, string_features):
    """A batch of decoded examples -> the pipeline's batch: images flipped and scaled to [0, 1],
    captions cut to max_caption_bytes and tokenized (vector ops over the batch)."""
    batch = dict(batch)
    images = augment.flip_batch(batch["images"], batch.pop("flip"))  # uint8 or float32
    batch["images"] = augment.normalize(tf.cast(images, tf.float32))
    captions, was_cut = limits_lib.cut_captions(batch.pop("caption"), max_caption_bytes)
    batch["captions_cut"] = tf.cast(was_cut, tf.int32)
    batch["token_ids"] = tokenizer(captions)
    if not string_features:
        batch.pop("example_id")
    return batch


def _check_files(pattern, files: Sequence[str], record_format: str = "basic_tf") -> tuple:
    """(int64 record count of each file from its stats sidecar, -1 without one; records in a
    pass over all files: sidecar counts, else at most bytes / 16, a record's framing alone).

    Looks cheaply at the files (a stat only where there is no sidecar) and raises ValueError
    naming the pattern when a file is a directory or every file is empty (0 bytes, or a sidecar
    counting 0 records): such input can never give a batch.
    """
    expected, empty, per_pass = [], [], 0
    for f in files:
        if record_format == "img2dataset":
            n = img2dataset.expected_records(f)
        else:
            stats = writer.read_shard_stats(f)
            n = int(stats["num_records"]) if stats is not None else -1
        if n < 0:
            info = tf.io.gfile.stat(f)
            if info.is_directory:
                raise ValueError(f"file_pattern {pattern!r} matches {f!r}, which is a "
                                 f"directory; give a glob of shard files, e.g. '{f}/*.tfrecord'")
        if n == 0 or (n < 0 and info.length == 0):
            empty.append(f)
        expected.append(n)
        per_pass += n if n >= 0 else info.length // 16
    if empty and len(empty) == len(files):
        raise ValueError(
            f"file_pattern {pattern!r}: all {len(files)} matching file(s) are empty (0 bytes or "
            f"0 records in the stats sidecar), e.g. {empty[0]!r}; write shards with "
            "tools/make_tfrecords.py and check them with --validate")
    if empty:
        logging.warning("file_pattern %r: %d of %d files are empty and give no record: %s",
                        pattern, len(empty), len(files), empty[:5])
    return expected, per_pass


def make_dataset(input_context: Optional[tf.distribute.InputContext], data: DataConfig, *,
                 training: bool = True,
                 file_pattern: Union[str, Sequence[str]],
                 eval_file_pattern: Union[str, Sequence[str], None] = None,
                 global_batch_size: int,
                 eval_global_batch_size: Optional[int] = None,
                 shuffle_buffer: int = 10_000,
                 seed: int = 0,
                 cycle_length: int = 8,
                 area_range: Sequence[float] = (0.5, 1.0),
                 aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                 random_flip: bool = True,
                 string_features: bool = True,
                 log_skipped: bool = True,
                 max_skipped_fraction: Optional[float] = 0.5,
                 record_format: str = "basic_tf",
                 limits: Optional[limits_lib.InputLimits] = None) -> tf.data.Dataset:
    """Builds the (per-replica-batched) dataset for training or evaluation; see module doc.

    Every setting is an argument; gin binds them as `make_dataset.<argument>` at the top, and
    data's fields as `make_dataset.image_size` etc. (basic_tf/from_gin_data.py, whose
    `make_dataset` builds `data` and passes the `input_limits.*` bounds).

    Args:
      input_context: from strategy.distribute_datasets_from_function; None = one pipeline,
        batch = global batch.
      data: image size, seq_len and tokenizer path (token ids [b, seq_len]), evaluation's
        centre crop fraction, antialiased resize; checked here (`check_values`).
      training: random crops/captions, shuffled, repeated forever, drop_remainder; else one
        padded pass with centre crops and first captions.
      file_pattern / eval_file_pattern: shard glob(s) for training / evaluation
        (evaluation defaults to file_pattern).
      global_batch_size / eval_global_batch_size: summed over all replicas.
      shuffle_buffer, seed: record shuffle buffer and the seed of every random choice.
      cycle_length: shards read concurrently.
      area_range, aspect_ratio_range, random_flip: training crop and flip.
      string_features: include example_id (tf.string; TPU infeed cannot carry strings).
      log_skipped: log each skipped record's error (from tf.data, at warning level).
      max_skipped_fraction: stop (skips.account) once more than this fraction of the records
        read by this pipeline were skipped (checked from min(1000, records per pass) records
        on); None: no bound.
      limits: the bounds on image pixels and caption bytes (default: `input_limits()`'s).
      record_format: 'basic_tf' (basic_tf.data.schema) or 'img2dataset' (its TFRecords as
        they are: image under jpg/jpeg/png/webp, caption `txt`, id `key`, no label;
        basic_tf.data.img2dataset). Skips, bounds, sharding and resume work alike.
    """
    data.check_values()
    img2dataset.check_record_format(record_format)
    pattern = file_pattern if (training or eval_file_pattern is None) else eval_file_pattern
    if max_skipped_fraction is not None and not 0.0 <= max_skipped_fraction <= 1.0:
        raise ValueError(f"make_dataset.max_skipped_fraction={max_skipped_fraction!r} must be "
                         "in [0, 1] or None")
    batch_size = global_batch_size if training else (eval_global_batch_size or global_batch_size)
    all_files = schema.list_shards(pattern)
    files = shard_for_pipeline(all_files, input_context)
    if input_context is not None and input_context.num_input_pipelines > 1:
        logging.info("input pipeline %d of %d reads %d of the %d shard files of %s: %s",
                     input_context.input_pipeline_id, input_context.num_input_pipelines,
                     len(files), len(all_files), pattern, ", ".join(files))
    per_replica = batch_size
    replicas_per_pipeline = 1
    if input_context is not None:
        if batch_size % input_context.num_replicas_in_sync:
            raise ValueError(f"global batch size {batch_size} is not divisible by the "
                             f"{input_context.num_replicas_in_sync} replicas in sync")
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        replicas_per_pipeline = max(
            input_context.num_replicas_in_sync // input_context.num_input_pipelines, 1)
    expected, per_pass = _check_files(pattern, files, record_format)
    limits = limits or limits_lib.input_limits()
    tokenizer = Tokenizer(data.require_tokenizer(), data.seq_len)

    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(expected, tf.int64)))
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(_read_shard, cycle_length=min(cycle_length, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:  # an END element carries the count of records skipped at the very end
        ds = ds.concatenate(tf.data.Dataset.from_tensors(
            {"record": tf.constant(""), "kind": _END, "missing": tf.constant(0, tf.int64)}))
    ds = ds.enumerate()
    ds = ds.map(functools.partial(_parse, record_format=record_format),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=log_skipped)
    ds = ds.enumerate()  # numbers after parsing: the gaps before them are parse errors
    decode = functools.partial(
        _decode, training=training, seed=seed, image_size=data.image_size,
        area_range=area_range, aspect_ratio_range=aspect_ratio_range, random_flip=random_flip,
        eval_crop_fraction=data.eval_crop_fraction, antialias=data.antialias, limits=limits)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=log_skipped)
    # A record can stay in the shuffle buffer for a while: "a whole pass with no usable
    # record" is two passes plus 8 buffer lengths of elements (a good record stays in the
    # buffer that long with probability e^-8).
    state, account = skips.account(
        where=str(pattern), num_files=len(files), max_skipped_fraction=max_skipped_fraction,
        min_records_for_fraction=max(min(1000, per_pass), 1),
        stall_elements=2 * (per_pass + len(files)) + 8 * shuffle_buffer if training else None,
        end_kind=_END, record_kind=_RECORD, bad_kind=_BAD)
    # Accounting per batch of elements (records, BAD records, shard ends); its output keeps
    # only the examples (and pass ends carrying skips), so its batches vary in size.
    ds = ds.batch(per_replica, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.scan(state, account)
    finish = functools.partial(_finish_batch, tokenizer=tokenizer,
                               max_caption_bytes=limits.max_caption_bytes,
                               string_features=string_features)
    if training:
        ds = ds.rebatch(per_replica, drop_remainder=True)
    else:
        ds = pad_to_batches(ds.unbatch(), per_replica, replicas_per_pipeline)
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
            if value.dtype == tf.string:
                fill = ""
            elif value.dtype == tf.bool:  # tf.constant(0, tf.bool) is refused
                fill = False
            else:
                fill = schema.NO_LABEL if key == "labels" else 0
            filler = tf.fill([group - tf.shape(value)[0]] + rest, tf.constant(fill, value.dtype))
            value = tf.concat([value, filler], axis=0)
            out[key] = tf.reshape(value, [replicas, batch_size] + rest)
        return out

    return ds.batch(group).map(pad).unbatch()
