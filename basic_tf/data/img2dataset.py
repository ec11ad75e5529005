"""img2dataset's TFRecord layout (`img2dataset --output_format tfrecord`), read as it is.

Each record is a `tf.train.Example` with
  key                      bytes   the pair's id ("000000012"): our example id
  jpg | jpeg | png | webp  bytes   the encoded image, under the key of its format
  txt                      bytes   the caption (absent or empty: the `caption` column is tried)
  url, caption, status, width, height, error_message, ...: metadata columns.
Metadata columns are never parsed: img2dataset writes a column that is sometimes empty as a
number in some records and as empty bytes in others, so declaring its type breaks a reader
(kakaobrain/coyo-align, FLIP and clip-jax also parse only image, text and key).

Shards sit beside `<shard>_stats.json` files (img2dataset's per-shard stats); their "successes"
count is what the shard should hold, so a truncated shard's lost tail is counted as for our own
shards' sidecars. The training pipeline (basic_tf.data.pipeline, record_format='img2dataset')
uses `parse_examples`; tools that read records in Python (profile, new_experiment) use
`decode_record`.
"""
import json
from typing import Iterator, Optional, Union

import tensorflow as tf

from basic_tf.data import schema

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEY, FALLBACK_TEXT_KEY, ID_KEY = "txt", "caption", "key"
RECORD_FORMATS = ("basic_tf", "img2dataset")

_SPEC = {k: tf.io.FixedLenFeature([], tf.string, default_value="") for k in IMAGE_KEYS}
_SPEC[TEXT_KEY] = tf.io.RaggedFeature(tf.string)
_SPEC[ID_KEY] = tf.io.FixedLenFeature([], tf.string, default_value="")
_FALLBACK_SPEC = {FALLBACK_TEXT_KEY: tf.io.RaggedFeature(tf.string)}


def parse_examples(serialized: tf.Tensor) -> tuple:
    """Graph-side parse of a block of records: tf.string [k] -> (images tf.string [k] ("" when
    no image key holds bytes: skipped as bad_image), captions tf.string ragged [k, None],
    labels int32 [k] (always schema.NO_LABEL), example ids tf.string [k]).

    `caption` is parsed only from records whose `txt` is missing or blank (the others are
    parsed as an empty Example there), so a record whose metadata column `caption` has another
    type still reads when it has a `txt`. A record whose `txt`, image or `key` has the wrong
    type, or a blank `txt` and a `caption` of another type, makes the parse raise (the pipeline
    then parses the block record by record: basic_tf.data.shard_reader).
    """
    ex = tf.io.parse_example(serialized, _SPEC)
    image = tf.zeros_like(serialized)
    for key in reversed(IMAGE_KEYS):  # the first key holding bytes wins
        image = tf.where(tf.strings.length(ex[key]) > 0, ex[key], image)
    text = ex[TEXT_KEY]
    blank = tf.reduce_all(tf.strings.length(tf.strings.strip(text)) == 0, axis=1)
    fallback = tf.io.parse_example(tf.where(blank, serialized, ""), _FALLBACK_SPEC)
    captions = tf.concat([text, fallback[FALLBACK_TEXT_KEY]], axis=1)
    labels = tf.fill(tf.shape(serialized), tf.constant(schema.NO_LABEL, tf.int32))
    return image, captions, labels, ex[ID_KEY]


def expected_records(shard: str) -> int:
    """Records img2dataset wrote into `shard` ("successes" of `<shard without
    .tfrecord>_stats.json`), -1 without such a file."""
    stem = shard[:-len(".tfrecord")] if shard.endswith(".tfrecord") else shard
    path = stem + "_stats.json"
    if not tf.io.gfile.exists(path):
        return -1
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return int(json.load(f)["successes"])
    except (ValueError, KeyError, TypeError):
        return -1


def _only_bytes(feature) -> Optional[bytes]:
    values = feature.bytes_list.value
    return values[0] if len(values) == 1 else None


def decode_record(serialized: bytes, shard: str = "?", index: int = -1) -> schema.Record:
    """Serialized img2dataset example -> schema.Record (no label; metadata: the other bytes
    columns as JSON). Raises schema.SchemaError naming the shard, record and field."""
    where = f"{shard} record {index}"
    example = tf.train.Example()
    try:
        example.ParseFromString(serialized)
    except Exception as e:  # protobuf's DecodeError
        raise schema.SchemaError(f"{where}: not a serialized tf.train.Example ({e})") from None
    feats = example.features.feature
    image = next((_only_bytes(feats[k]) for k in IMAGE_KEYS
                  if k in feats and _only_bytes(feats[k])), None)
    if image is None:
        raise schema.SchemaError(f"{where}: no image under any of the fields {IMAGE_KEYS}; "
                                 f"fields are {sorted(feats)}")
    captions = []
    for key in (TEXT_KEY, FALLBACK_TEXT_KEY):
        if key in feats:
            captions = [c.decode("utf-8", "replace") for c in feats[key].bytes_list.value
                        if c.strip()]
        if captions:
            break
    if not captions:
        raise schema.SchemaError(f"{where}: field {TEXT_KEY!r} (and {FALLBACK_TEXT_KEY!r}) is "
                                 "missing or blank")
    example_id = (_only_bytes(feats[ID_KEY]) or b"") if ID_KEY in feats else b""
    metadata = {k: v.decode("utf-8", "replace") for k in sorted(feats)
                if k not in IMAGE_KEYS + (TEXT_KEY, ID_KEY)
                for v in [_only_bytes(feats[k])] if v is not None}
    return schema.Record(image=image, captions=captions,
                         example_id=example_id.decode("utf-8", "replace") or f"{shard}/{index}",
                         metadata=json.dumps(metadata, ensure_ascii=False) if metadata else None)


def read_records(shard: str) -> Iterator[Union[schema.Record, schema.SkippedSource]]:
    """The records of one img2dataset shard as schema.Records, in Python (profile, conversion);
    a record without image or caption (a failed download) or off the layout is a SkippedSource
    (cause "unreadable"), a frame cut short ends the shard with one (cause "truncated")."""
    i = -1
    try:
        for i, serialized in enumerate(tf.data.TFRecordDataset(shard).as_numpy_iterator()):
            try:
                yield decode_record(serialized, shard, i)
            except schema.SchemaError as e:
                yield schema.SkippedSource(f"{shard} record {i}", str(e), "unreadable")
    except tf.errors.DataLossError as e:
        yield schema.SkippedSource(f"{shard} record {i + 1}", f"shard is cut or corrupt "
                                   f"({e.message.splitlines()[0]})", "truncated")


def to_shards(file_pattern: str, output_prefix: str, **write_kwargs):
    """img2dataset shards -> basic_tf shards `<output_prefix>-*.tfrecord` (for tools that read
    our schema: evaluation, export); skipped records are counted by cause in the returned
    writer.WriteSummary. Raises ValueError naming the pattern when nothing is written."""
    from basic_tf.data import writer

    def records():
        for shard in schema.list_shards(file_pattern):
            yield from read_records(shard)

    summary = writer.write_tfrecords(records(), output_prefix, show_progress=False,
                                     **write_kwargs)
    if not summary.written:
        raise ValueError(f"{file_pattern}: no img2dataset record could be written "
                         f"({summary.to_json()})")
    return summary


def detect_record_format(shard: str) -> str:
    """'basic_tf' or 'img2dataset' from the fields of the shard's first record. Raises
    ValueError naming the shard and its fields when it is neither (or holds no record)."""
    first = next(iter(tf.data.TFRecordDataset(shard).take(1).as_numpy_iterator()), None)
    if first is None:
        raise ValueError(f"{shard}: holds no record, cannot tell its format")
    example = tf.train.Example()
    try:
        example.ParseFromString(first)
    except Exception as e:
        raise ValueError(f"{shard}: record 0 is not a tf.train.Example ({e})") from None
    fields = set(example.features.feature)
    if schema.IMAGE_KEY in fields:
        return "basic_tf"
    if fields & set(IMAGE_KEYS) and fields & {TEXT_KEY, FALLBACK_TEXT_KEY}:
        return "img2dataset"
    raise ValueError(f"{shard}: record 0 has fields {sorted(fields)}: neither basic_tf's "
                     f"({schema.IMAGE_KEY!r}, {schema.CAPTION_KEY!r}, ...) nor img2dataset's "
                     f"(one of {IMAGE_KEYS}, {TEXT_KEY!r}, {ID_KEY!r})")


def check_record_format(record_format: str, where: str = "make_dataset.record_format") -> str:
    """The name, checked: one of RECORD_FORMATS (ValueError naming `where` otherwise)."""
    if record_format not in RECORD_FORMATS:
        raise ValueError(f"{where}={record_format!r}, expected one of {RECORD_FORMATS}")
    return record_format
