"""The one TFRecord example format of basic_tf: an image, its captions, an optional label, an id.

Each record is a serialized `tf.train.Example` with these features:

  image/encoded  bytes, 1 value    the encoded image file, JPEG, PNG or WebP (never raw pixels),
                                    so training can fuse decode and random crop for JPEG.
  image/format   bytes, 1 value    b"jpeg", b"png" or b"webp" (what `image/encoded` holds).
  caption        bytes, 1+ values  UTF-8 captions of this image; training picks one at random,
                                    evaluation takes the first.
  label          int64, 0/1 value  class index, absent (read as -1) for pure image-text data.
  label/name     bytes, 0/1 value  class name, absent (read as b"") with no label.
  id             bytes, 1 value    stable example id (e.g. source path or "<dataset>/<split>/<n>"),
                                    so a record can be traced back to its source.
  metadata       bytes, 0/1 value  the source's JSON metadata of the pair (a webdataset member
                                    `<key>.json`: url, width, ...) as written; never parsed by
                                    the pipeline, kept so a record can be traced and filtered.

Grayscale sources (Fashion-MNIST) are stored as 3-channel images at write time, so every record
decodes to [H, W, 3] uint8. Each shard `<name>.tfrecord` has a sidecar `<name>.tfrecord.stats.json`
(`STATS_SUFFIX`) written by `basic_tf.data.writer`; the pipeline uses its record count to count
records lost to a truncated shard.
"""
import dataclasses
from typing import List, Optional, Sequence, Union

import tensorflow as tf

IMAGE_KEY = "image/encoded"
FORMAT_KEY = "image/format"
CAPTION_KEY = "caption"
LABEL_KEY = "label"
LABEL_NAME_KEY = "label/name"
ID_KEY = "id"
METADATA_KEY = "metadata"

IMAGE_FORMATS = ("jpeg", "png", "webp")
NO_LABEL = -1
STATS_SUFFIX = ".stats.json"

# Graph-side parsing spec (tf.io.parse_single_example). Captions are variable length.
FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    FORMAT_KEY: tf.io.FixedLenFeature([], tf.string),
    CAPTION_KEY: tf.io.RaggedFeature(tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=NO_LABEL),
    LABEL_NAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    ID_KEY: tf.io.FixedLenFeature([], tf.string),
}


class SchemaError(ValueError):
    """A record that does not follow the schema; the message names shard, record and field."""


@dataclasses.dataclass
class Record:
    """One example in Python: what writers produce and `decode_record` returns."""
    image: bytes
    captions: List[str]
    example_id: str
    label: Optional[int] = None
    label_name: Optional[str] = None
    metadata: Optional[str] = None

    @property
    def image_format(self) -> str:
        return sniff_image_format(self.image)


@dataclasses.dataclass
class SkippedSource:
    """What a source yields instead of a Record it cannot read (e.g. a missing image file): the
    writer counts it (`count` source records, by `cause`) and logs `where` (file and row, or
    tar and member) and `reason`."""
    where: str
    reason: str
    cause: str = "unreadable"
    count: int = 1


def sniff_image_format(data: bytes) -> Optional[str]:
    """'jpeg', 'png' or 'webp' from the file's magic bytes, None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def encode_record(record: Record, where: str = "record") -> bytes:
    """Record -> serialized tf.train.Example. `where` names the source in errors."""
    fmt = sniff_image_format(record.image)
    if fmt is None:
        raise SchemaError(f"{where}: image bytes are not JPEG, PNG or WebP (first bytes "
                          f"{record.image[:8]!r}); re-encode the image as JPEG, PNG or WebP")
    captions = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in record.captions]
    if not captions:
        raise SchemaError(f"{where}: field {CAPTION_KEY!r} is empty; every record needs >= 1 "
                          "caption")
    if not record.example_id:
        raise SchemaError(f"{where}: field {ID_KEY!r} is empty; give every record a stable id")
    feature = {
        IMAGE_KEY: _bytes([record.image]),
        FORMAT_KEY: _bytes([fmt.encode()]),
        CAPTION_KEY: _bytes(captions),
        ID_KEY: _bytes([record.example_id.encode("utf-8")]),
    }
    if record.label is not None:
        if record.label < 0:
            raise SchemaError(f"{where}: field {LABEL_KEY!r}={record.label} must be >= 0 "
                              "(leave it out for unlabelled data)")
        feature[LABEL_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[record.label]))
        if record.label_name:
            feature[LABEL_NAME_KEY] = _bytes([record.label_name.encode("utf-8")])
    if record.metadata:
        feature[METADATA_KEY] = _bytes([record.metadata.encode("utf-8")])
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def decode_record(serialized: bytes, shard: str = "?", index: int = -1) -> Record:
    """Serialized example -> Record, checking every field. Raises SchemaError naming the shard,
    the record index and the field that is wrong."""
    where = f"{shard} record {index}"
    example = tf.train.Example()
    try:
        example.ParseFromString(serialized)
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
        raise SchemaError(f"{where}: not a serialized tf.train.Example ({e})") from None
    feats = example.features.feature

    def only_bytes(key, required=True):
        if key not in feats:
            if required:
                raise SchemaError(f"{where}: missing field {key!r}")
            return None
        values = feats[key].bytes_list.value
        if len(values) != 1:
            raise SchemaError(f"{where}: field {key!r} must hold exactly 1 bytes value, has "
                              f"{len(values)}")
        return values[0]

    image = only_bytes(IMAGE_KEY)
    fmt = only_bytes(FORMAT_KEY).decode("utf-8", "replace")
    if fmt not in IMAGE_FORMATS:
        raise SchemaError(f"{where}: field {FORMAT_KEY!r}={fmt!r}, expected one of {IMAGE_FORMATS}")
    if sniff_image_format(image) != fmt:
        raise SchemaError(f"{where}: field {IMAGE_KEY!r} does not start like a {fmt} file "
                          f"(first bytes {image[:8]!r})")
    if CAPTION_KEY not in feats or not feats[CAPTION_KEY].bytes_list.value:
        raise SchemaError(f"{where}: field {CAPTION_KEY!r} is missing or has no value")
    try:
        captions = [c.decode("utf-8") for c in feats[CAPTION_KEY].bytes_list.value]
    except UnicodeDecodeError as e:
        raise SchemaError(f"{where}: field {CAPTION_KEY!r} is not UTF-8 ({e})") from None
    example_id = only_bytes(ID_KEY).decode("utf-8", "replace")
    label = label_name = None
    if LABEL_KEY in feats:
        values = feats[LABEL_KEY].int64_list.value
        if len(values) != 1 or values[0] < 0:
            raise SchemaError(f"{where}: field {LABEL_KEY!r}={list(values)}, expected one "
                              "integer >= 0")
        label = int(values[0])
        name = only_bytes(LABEL_NAME_KEY, required=False)
        label_name = name.decode("utf-8", "replace") if name is not None else None
    metadata = only_bytes(METADATA_KEY, required=False)
    return Record(image=image, captions=captions, example_id=example_id, label=label,
                  label_name=label_name,
                  metadata=metadata.decode("utf-8", "replace") if metadata is not None else None)


def parse_example(serialized: tf.Tensor) -> dict:
    """Graph-side parse of one record: tf.string [] -> dict of tensors.

    Returns image/encoded, image/format, id: tf.string []; caption: tf.string [n_captions];
    label: int64 [] (-1 if absent); label/name: tf.string [].
    """
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def list_shards(file_pattern: Union[str, Sequence[str]]) -> list:
    """Sorted shard paths matching glob(s); the writer's .json sidecars are left out."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    if not patterns:
        raise ValueError("file_pattern is empty; give a glob such as /data/train-*.tfrecord")
    files = []
    for pattern in patterns:
        matched = [f for f in tf.io.gfile.glob(pattern) if not f.endswith(".json")]
        if not matched:
            raise FileNotFoundError(f"file_pattern {pattern!r} matches no TFRecord shard; write "
                                    "shards with tools/make_tfrecords.py")
        files.extend(matched)
    return sorted(set(files))


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
