"""Writes `schema.Record`s into size-bounded TFRecord shards, each with a stats sidecar.

Shards are `<prefix>-00000-of-00004.tfrecord`; a new shard starts when the current one would pass
`max_shard_bytes`. Before writing, each record is cleaned:
  * captions that are blank after stripping are dropped; a record left with none is skipped;
  * captions repeated within a record (same text after lower-casing and whitespace folding,
    compared by SHA-1) are kept once;
  * a record whose image bytes and caption set hash like an earlier record's is skipped as a
    duplicate (an 8-byte digest per record is kept in memory);
  * with `check_images`, images Pillow cannot decode are skipped;
  * captions longer than `input_limits.max_caption_bytes` are cut, and images whose header
    claims more than `input_limits.max_image_pixels` are skipped (basic_tf.data.limits: the
    pipeline would skip them too), before anything is decoded;
  * a `schema.SkippedSource` (a source row whose image is missing or unreadable) is skipped;
  * a label name holding a control character, or given to two labels, is an error naming the
    example (basic_tf/data/class_names.py), nothing written.
Every skip is counted in the summary (`<prefix>.summary.json`) and logged with the example id
or source row. Shards are written as `.tmp` files and renamed at the end; on any failure the
`.tmp` files are removed.
"""
import collections
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from typing import Iterable, List, Optional

import tensorflow as tf
from absl import logging

from basic_tf.data import class_names, limits, schema
from basic_tf.files import absolute, write_atomically

CLASS_NAMES_SUFFIX = ".class_names.json"  # <output_prefix>.class_names.json: names by label


@dataclasses.dataclass
class WriteSummary:
    """What `write_tfrecords` did: shard paths and how many records were written or skipped."""
    shards: List[str]
    written: int = 0
    duplicate_records: int = 0
    duplicate_captions: int = 0
    empty_captions: int = 0
    empty_records: int = 0
    bad_images: int = 0
    too_large_images: int = 0
    unreadable_sources: int = 0
    cut_captions: int = 0
    skipped_sources: dict = dataclasses.field(default_factory=dict)  # cause -> source records

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Progress:
    """A one-line progress bar on stderr: count, rate and ETA (total may be unknown)."""

    def __init__(self, total: Optional[int], desc: str = "records", stream=None,
                 min_interval_s: float = 0.5):
        self.total, self.desc, self.count = total, desc, 0
        self.stream = stream or sys.stderr
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start = self._last = time.monotonic()
        self._interval = min_interval_s if self._tty else 10 * min_interval_s

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        rate = self.count / max(now - self._start, 1e-9)
        if self.total:
            frac = min(self.count / self.total, 1.0)
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            line = (f"[{bar}] {self.count}/{self.total} {self.desc} {100 * frac:5.1f}% "
                    f"{rate:,.0f}/s ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")
        else:
            line = f"{self.count} {self.desc} {rate:,.0f}/s"
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()


def normalize_caption(caption: str) -> str:
    """Lower-case, whitespace-folded caption: the key for caption de-duplication."""
    return " ".join(caption.lower().split())


def write_tfrecords(records: Iterable[schema.Record], output_prefix: str,
                    max_shard_bytes: int = 256 << 20, dedupe_records: bool = True,
                    check_images: bool = True, total: Optional[int] = None,
                    show_progress: bool = True,
                    bounds: Optional[limits.InputLimits] = None) -> WriteSummary:
    """Writes records into shards `<output_prefix>-XXXXX-of-NNNNN.tfrecord`.

    Each shard gets `<shard>.stats.json` (records, bytes, captions, caption lengths, labels,
    image formats, first/last id). Returns the WriteSummary, also saved as
    `<output_prefix>.summary.json`. When records carry label names, `<output_prefix>
    .class_names.json` lists them in label order (a JSON list: give it as --class_names to
    tools/evaluate.py and tools/export.py). `total` (if known) sizes the progress bar. `bounds`
    defaults to `limits.input_limits()`'s defaults. `records` may hold `schema.SkippedSource`s.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes={max_shard_bytes} must be > 0")
    bounds = bounds or limits.input_limits()
    tf.io.gfile.makedirs(os.path.dirname(absolute(output_prefix)))
    summary = WriteSummary(shards=[])
    seen = set()
    label_names = {}
    progress = Progress(total) if show_progress else None
    shards = _Shards(output_prefix, max_shard_bytes)
    try:
        for record in records:
            if progress:
                progress.update()
            if isinstance(record, schema.SkippedSource):
                if record.cause == "unreadable":
                    summary.unreadable_sources += record.count
                summary.skipped_sources[record.cause] = (
                    summary.skipped_sources.get(record.cause, 0) + record.count)
                logging.warning("skipped %s: %s", record.where, record.reason)
                continue
            record = _clean(record, summary, seen, dedupe_records, check_images, bounds)
            if record is None:
                continue
            if record.label is not None and record.label_name:
                _add_label_name(label_names, record)
            shards.add(record, schema.encode_record(record,
                                                    where=f"example {record.example_id!r}"))
            summary.written += 1
        if progress:
            progress.close()
        summary.shards = shards.finish()
    except BaseException:  # also KeyboardInterrupt: never leave a .tmp shard behind
        shards.remove_tmp()
        raise
    write_atomically(output_prefix + ".summary.json", json.dumps(summary.to_json(), indent=1))
    if label_names:  # index = label; a label no record had is ""
        names = [label_names.get(i, "") for i in range(max(label_names) + 1)]
        write_atomically(output_prefix + CLASS_NAMES_SUFFIX,
                         json.dumps(names, indent=1, ensure_ascii=False))
    if not summary.written:
        logging.warning("write_tfrecords(%s): no record written (summary: %s)", output_prefix,
                        summary.to_json())
    return summary


def _add_label_name(label_names: dict, record: schema.Record) -> None:
    """Adds record.label's name to `label_names` {label: name}; ValueError naming the example
    for a name with a control character or one that another label already has
    (basic_tf/data/class_names.py: the list must read back as itself, one name per class)."""
    where = f"example {record.example_id!r} (label {record.label})"
    name = class_names.check_name(record.label_name, where)
    if record.label not in label_names:
        other = next((label for label, n in label_names.items() if n == name), None)
        if other is not None:
            raise ValueError(f"{where}: class name {name!r} is also label {other}'s; each class "
                             "needs a distinct name (evaluate and export tell classes apart by "
                             "name): fix the class-name list")
        label_names[record.label] = name


class _Shards:
    """The shards being written, as `.tmp` files until `finish` renames them (with their stats
    sidecars); a new one starts when the current one would pass max_bytes."""

    def __init__(self, prefix: str, max_bytes: int):
        self.prefix, self.max_bytes = prefix, max_bytes
        self.tmp_paths, self.stats = [], []
        self._writer, self._bytes = None, 0

    def add(self, record: schema.Record, serialized: bytes) -> None:
        size = len(serialized) + 16  # TFRecord framing: length, 2 CRCs
        if self._writer is None or (self._bytes > 0 and self._bytes + size > self.max_bytes):
            self._close()
            self.tmp_paths.append(f"{self.prefix}-{len(self.tmp_paths):05d}.tfrecord.tmp")
            self.stats.append(_ShardStats())
            self._writer, self._bytes = tf.io.TFRecordWriter(self.tmp_paths[-1]), 0
        self._writer.write(serialized)
        self._bytes += size
        self.stats[-1].add(record, size)

    def finish(self) -> List[str]:
        """Renames the .tmp shards to `<prefix>-XXXXX-of-NNNNN.tfrecord`; their paths."""
        self._close()
        n, finals = len(self.tmp_paths), []
        for i, (tmp, st) in enumerate(zip(self.tmp_paths, self.stats)):
            final = f"{self.prefix}-{i:05d}-of-{n:05d}.tfrecord"
            tf.io.gfile.rename(tmp, final, overwrite=True)
            write_atomically(final + schema.STATS_SUFFIX,
                             json.dumps(st.to_json(os.path.basename(final)), indent=1))
            finals.append(final)
        return finals

    def remove_tmp(self) -> None:
        self._close()
        for path in self.tmp_paths:
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _clean(record, summary, seen, dedupe_records, check_images,
           bounds) -> Optional[schema.Record]:
    """Applies the cleaning rules of the module docstring; None means skipped (and counted)."""
    kept, keys = [], set()
    for caption in record.captions:
        cut = limits.cut_caption_text(caption, bounds.max_caption_bytes)
        if cut != caption:
            summary.cut_captions += 1
            caption = cut
        key = normalize_caption(caption)
        if not key:
            summary.empty_captions += 1
            continue
        digest = hashlib.sha1(key.encode("utf-8")).digest()
        if digest in keys:
            summary.duplicate_captions += 1
            continue
        keys.add(digest)
        kept.append(caption.strip())
    if not kept:
        summary.empty_records += 1
        logging.warning("skipped %s: no non-empty caption", record.example_id)
        return None
    if dedupe_records:
        h = hashlib.sha1(record.image)
        for digest in sorted(keys):
            h.update(digest)
        digest = h.digest()[:8]
        if digest in seen:
            summary.duplicate_records += 1
            return None
        seen.add(digest)
    height_width = limits.header_height_width(record.image)
    if height_width is not None and height_width[0] * height_width[1] > bounds.max_image_pixels:
        summary.too_large_images += 1
        logging.warning("skipped %s: the image is %dx%d pixels, more than "
                        "input_limits.max_image_pixels=%d", record.example_id, *height_width,
                        bounds.max_image_pixels)
        return None
    if check_images and not _decodes(record.image):
        summary.bad_images += 1
        logging.warning("skipped %s: the image does not decode", record.example_id)
        return None
    return dataclasses.replace(record, captions=kept)


def _decodes(image: bytes) -> bool:
    from PIL import Image

    if schema.sniff_image_format(image) is None:
        return False
    try:
        with Image.open(io.BytesIO(image)) as im:
            im.load()
        return True
    except Exception:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        return False


class _ShardStats:
    def __init__(self):
        self.num_records = self.num_bytes = self.num_captions = 0
        self.caption_chars_min, self.caption_chars_max, self.caption_chars_sum = 1 << 30, 0, 0
        self.labels = collections.Counter()
        self.formats = collections.Counter()
        self.first_id = self.last_id = None

    def add(self, record: schema.Record, size: int) -> None:
        self.num_records += 1
        self.num_bytes += size
        self.num_captions += len(record.captions)
        for c in record.captions:
            self.caption_chars_min = min(self.caption_chars_min, len(c))
            self.caption_chars_max = max(self.caption_chars_max, len(c))
            self.caption_chars_sum += len(c)
        self.labels[str(record.label if record.label is not None else schema.NO_LABEL)] += 1
        self.formats[record.image_format] += 1
        self.first_id = self.first_id or record.example_id
        self.last_id = record.example_id

    def to_json(self, shard: str) -> dict:
        return {
            "shard": shard,
            "num_records": self.num_records,
            "num_bytes": self.num_bytes,
            "num_captions": self.num_captions,
            "caption_chars": {"min": self.caption_chars_min, "max": self.caption_chars_max,
                              "mean": self.caption_chars_sum / max(self.num_captions, 1)},
            "labels": dict(sorted(self.labels.items(), key=lambda kv: int(kv[0]))),
            "image_formats": dict(self.formats),
            "first_id": self.first_id,
            "last_id": self.last_id,
        }


def read_shard_stats(shard: str) -> Optional[dict]:
    """The sidecar stats of a shard, or None when it has none."""
    path = shard + schema.STATS_SUFFIX
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)
