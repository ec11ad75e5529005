"""Reads shards back in Python and reports every record the training pipeline would skip.

Problem kinds (the same rules as `basic_tf.data.pipeline`, whose decoders are used here):
  truncated      the shard ends inside a record or a CRC fails: later records are unreadable
  count_mismatch the shard holds fewer records than its stats sidecar says
  schema         the record is not an Example of the basic_tf schema (message names the field)
  corrupt_image  TensorFlow cannot decode the image
  too_large      the image header claims more than input_limits.max_image_pixels pixels (not
                 decoded here either)
  empty_caption  every caption is blank
Captions longer than input_limits.max_caption_bytes are not a problem (training cuts them) but
are counted (`Report.long_captions`).
"""
import dataclasses
from typing import Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from basic_tf.data import augment, limits, schema, writer


@dataclasses.dataclass
class Problem:
    shard: str
    index: int          # record index in the shard (-1: the shard as a whole)
    kind: str
    message: str

    def __str__(self) -> str:
        where = self.shard if self.index < 0 else f"{self.shard} record {self.index}"
        return f"{where}: {self.kind}: {self.message}"


@dataclasses.dataclass
class Report:
    shards: int = 0
    records: int = 0
    ok: int = 0
    long_captions: int = 0
    problems: List[Problem] = dataclasses.field(default_factory=list)

    def counts(self) -> dict:
        out = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def __str__(self) -> str:
        lines = [f"{self.shards} shards, {self.records} records read, {self.ok} ok, "
                 f"problems: {self.counts() or 'none'}; captions over "
                 f"input_limits.max_caption_bytes (cut in training): {self.long_captions}"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def iter_shard(path: str) -> Iterator[Tuple[int, bytes]]:
    """(index, serialized record) for each readable record; raises tf.errors.DataLossError at a
    truncated or corrupt frame (after yielding the records before it)."""
    for i, rec in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        yield i, rec


def read_records(path: str) -> List[schema.Record]:
    """Every record of a shard, checked against the schema (SchemaError names shard and record).
    A truncated shard raises ValueError naming the shard and the last good record."""
    out = []
    try:
        for i, rec in iter_shard(path):
            out.append(schema.decode_record(rec, path, i))
    except tf.errors.DataLossError as e:
        raise ValueError(f"{path}: truncated or corrupt after record {len(out) - 1} "
                         f"({e.message.splitlines()[0]})") from None
    return out


def image_decodes(image: bytes) -> bool:
    """True if TensorFlow decodes the bytes to an [H, W, 3] image with H, W > 0."""
    try:
        shape = tf.shape(augment.decode_rgb(tf.constant(image)))
        return bool(shape[0] > 0 and shape[1] > 0)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return False


def validate_shards(paths: Sequence[str], decode_images: bool = True,
                    bounds: Optional[limits.InputLimits] = None) -> Report:
    """Reads every record of `paths`; returns a Report listing each problem (see module doc).
    `bounds` defaults to `limits.input_limits()`'s defaults."""
    report = Report()
    bounds = bounds or limits.input_limits()
    for path in paths:
        report.shards += 1
        count = 0
        try:
            for i, rec in iter_shard(path):
                count += 1
                report.records += 1
                problem = _check_record(path, i, rec, decode_images, bounds, report)
                if problem:
                    report.problems.append(problem)
                else:
                    report.ok += 1
        except tf.errors.DataLossError as e:
            report.problems.append(Problem(path, -1, "truncated",
                                           f"unreadable after record {count - 1}: "
                                           f"{e.message.splitlines()[0]}"))
        stats = writer.read_shard_stats(path)
        if stats is not None and stats["num_records"] != count:
            report.problems.append(Problem(path, -1, "count_mismatch",
                                           f"read {count} records, stats file says "
                                           f"{stats['num_records']}"))
    return report


def _check_record(path, index, serialized, decode_images, bounds, report):
    try:
        record = schema.decode_record(serialized, path, index)
    except schema.SchemaError as e:
        return Problem(path, index, "schema", str(e).split(": ", 1)[-1])
    report.long_captions += sum(len(c.encode("utf-8")) > bounds.max_caption_bytes
                                for c in record.captions)
    if not any(c.strip() for c in record.captions):
        return Problem(path, index, "empty_caption", f"id {record.example_id!r}: all "
                       f"{len(record.captions)} captions are blank")
    height_width = limits.header_height_width(record.image)
    if height_width is not None and height_width[0] * height_width[1] > bounds.max_image_pixels:
        return Problem(path, index, "too_large", f"id {record.example_id!r}: the image is "
                       f"{height_width[0]}x{height_width[1]} pixels, more than "
                       f"input_limits.max_image_pixels={bounds.max_image_pixels}")
    if decode_images and not image_decodes(record.image):
        return Problem(path, index, "corrupt_image", f"id {record.example_id!r}: the "
                       f"{record.image_format} image does not decode")
    return None
