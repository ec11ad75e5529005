"""The tf.data input pipeline: TFRecord shards -> batches of images, token ids and labels.

Shards are basic_tf's own (basic_tf.data.schema) or img2dataset's TFRecords as they are
(`record_format='img2dataset'`, basic_tf.data.img2dataset).

    files (this host's share) -> [train: shuffle files, repeat] -> interleave shard readers
    (basic_tf.data.shard_reader: blocks of 256 records parsed, checked and given their caption,
    flip and crop seed with vector ops) -> rows -> [train: shuffle] -> number each row ->
    decode/crop/resize (parallel, per example) -> batch -> count skipped records by cause (per
    batch) -> [train: rebatch | evaluation: pad] -> flip, scale, cut and tokenize captions
    (per batch) -> prefetch

Per-element work is kept to the decode of the crop window and its resize (a decode can fail,
and a failing element must be dropped alone); parsing, header checks, random draws and caption
choice run on blocks of records, flip, scaling, caption cut and tokenization on batches (issue
22: each per-element tf.data stage cost about as much as decoding the demo's 28 px PNG).

Graph-only (no py_function), static shapes, deterministic: the random crop, flip and caption
choice are stateless, keyed by (seed, file, visit of the file, record number), so a restored
iterator (`tf.train.Checkpoint(iterator=...)`) continues with exactly the batches it would have
given.

Bad records never stop a run by themselves. A record that fails to parse becomes a BAD row
(shard_reader); an image that does not decode raises inside the parallel decode map,
`ignore_errors` drops it, and the gap it leaves in the element numbers is counted. A record
with no non-empty caption, or an image with more pixels than `input_limits.max_image_pixels`
(read from its header, before decoding), is skipped without decoding. A truncated shard's lost
tail is counted from the shard's stats sidecar (written by basic_tf.data.writer). Captions
longer than `input_limits.max_caption_bytes` are cut before tokenisation. Each example carries
"skipped" and "skipped_by_cause": records dropped just before it, so sums over consumed batches
are exact (`SkippedRecordsCounter` keeps them, reduced over
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

from basic_tf.data import augment, img2dataset, schema, shard_reader, skips, writer
from basic_tf.data import limits as limits_lib
from basic_tf.data.data_config import DataConfig
from basic_tf.data.skips import SkippedRecordsCounter  # noqa: F401 (its home was here)
from basic_tf.data.tokenizer import Tokenizer

_RECORD, _SHARD_END, _END, _BAD = (shard_reader.RECORD, shard_reader.SHARD_END, shard_reader.END,
                                   shard_reader.BAD)


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


def _decode(index, row, *, training, image_size, area_range, aspect_ratio_range,
            eval_crop_fraction, antialias, max_image_pixels):
    """(element number, planned row) -> example dict: the only per-example work, the decode of
    the crop window and its resize (augment.decode_window). A JPEG whose SOF claims too many
    pixels becomes kind BAD, cause too_large (nothing decoded); rows that are not usable
    records decode a 1x1 placeholder; an image that does not decode raises (-> dropped,
    counted as bad_image). The image is unflipped ("flip" says whether to flip it), uint8 in
    training (exact when the window already has the output size, as in the demo: a bilinear
    resize at scale 1 samples the pixel centres, and no tf.cond per example skips it; else the
    resize rounded, <= 0.5 / 255), float32 in [0, 255] in evaluation (exactly what serving's
    decode_and_center_crop gives); `_finish_batch` does the rest per batch."""
    kind = row["kind"]
    usable = kind == _RECORD
    image_bytes = tf.where(usable, row["image"], limits_lib.one_pixel_jpeg())
    branch = tf.where(usable, row["branch"], augment.JPEG)
    if training:
        box = augment.random_box_fn(row["crop_seed"], area_range, aspect_ratio_range)
    else:
        box = augment.center_box_fn(eval_crop_fraction)
    window, too_large = augment.decode_window(image_bytes, box, branch, max_image_pixels)
    usable &= ~too_large
    if training:
        image = tf.saturate_cast(augment.resize(window, image_size, antialias) + 0.5, tf.uint8)
    else:
        image = augment.resize(window, image_size, antialias)
    return {"index": index, "kind": tf.where(too_large, _BAD, kind),  # placeholders never are
            "missing": row["missing"],
            "cause": tf.where(too_large, skips.TOO_LARGE, row["cause"]),
            "images": tf.ensure_shape(image, [image_size, image_size, 3]), "flip": row["flip"],
            "caption": row["caption"], "labels": row["labels"],
            "example_id": row["example_id"], "mask": tf.cast(usable, tf.float32)}


def _finish_batch(batch, tokenizer, max_caption_bytes, string_features):
    """A batch of decoded examples -> the pipeline's batch: images flipped and scaled to [0, 1],
    captions cut to max_caption_bytes and tokenized (vector ops over the batch)."""
    batch = dict(batch)
    images = augment.flip_batch(batch["images"], batch.pop("flip"))  # uint8 or float32
    if images.dtype == tf.uint8:  # in [0, 255] already: no clip
        batch["images"] = tf.cast(images, tf.float32) / 255.0
    else:
        batch["images"] = augment.normalize(images)
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

    planner = shard_reader.BlockPlanner(
        record_format=record_format, training=training, seed=seed, random_flip=random_flip,
        max_image_pixels=limits.max_image_pixels)
    place = {f: i for i, f in enumerate(all_files)}  # a file's key in every host's draws
    file_ids = [place[f] for f in files]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(file_ids, tf.int64), files, tf.constant(expected, tf.int64)))
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()  # file visits: with the file, the key of the visit's random draws
    ds = ds.interleave(
        lambda visit, f: shard_reader.read_shard(f[0], visit, f[1], f[2], planner),
        cycle_length=min(cycle_length, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    ds = ds.unbatch()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:  # an END row carries the count of records skipped at the very end
        ds = ds.concatenate(tf.data.Dataset.from_tensor_slices(shard_reader.rows(1, _END)))
    ds = ds.enumerate()  # the gaps after the decode's drops are bad images
    decode = functools.partial(
        _decode, training=training, image_size=data.image_size, area_range=area_range,
        aspect_ratio_range=aspect_ratio_range, eval_crop_fraction=data.eval_crop_fraction,
        antialias=data.antialias, max_image_pixels=limits.max_image_pixels)
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
