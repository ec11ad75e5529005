"""Helpers shared by the data room's tests: tiny images and records."""
import io
import json

import numpy as np
import tensorflow as tf
from PIL import Image

from basic_tf.data import schema

COLOURS = ("red", "green", "blue", "yellow")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))


def random_image(seed: int, height: int = 20, width: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_records(n: int, fmt: str = "jpeg", size=(20, 24)) -> list:
    """n records: random images, 2 captions each ('<colour> thing number i ...'), label i % 4."""
    out = []
    for i in range(n):
        image = random_image(i, *size)
        label = i % len(COLOURS)
        out.append(schema.Record(
            image=jpeg_bytes(image) if fmt == "jpeg" else png_bytes(image),
            captions=[f"a {COLOURS[label]} thing number {i}", f"picture {i} of {COLOURS[label]}"],
            example_id=f"ex/{i:04d}", label=label, label_name=COLOURS[label]))
    return out


def write_bad_shard(path, records_before=4):
    """A shard (stats sidecar claims all records) with: good records, a corrupt JPEG (valid
    header, garbage body), an empty-caption record, good records, then a truncated last record.
    Returns the ids of the good records that survive."""
    good = make_records(records_before + 4)
    corrupt = jpeg_bytes(random_image(99, 32, 32))
    corrupt = corrupt[:200] + b"\x00\x11" * 300 + corrupt[-2:]
    rows = good[:records_before] + [
        schema.Record(corrupt, ["corrupt image"], "bad/corrupt"),
        schema.Record(good[0].image, ["   "], "bad/empty")] + good[records_before:]
    with tf.io.TFRecordWriter(path) as w:
        for r in rows:
            w.write(schema.encode_record(r) if r.captions != ["   "] else _empty_caption(r))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-40])  # the last record loses its tail
    with open(path + schema.STATS_SUFFIX, "w") as f:
        json.dump({"num_records": len(rows)}, f)
    return [r.example_id for r in good[:-1]], len(rows)


def _empty_caption(record):
    ex = tf.train.Example.FromString(schema.encode_record(
        schema.Record(record.image, ["x"], record.example_id)))
    ex.features.feature[schema.CAPTION_KEY].bytes_list.value[0] = b"   "
    return ex.SerializeToString()


def png_claiming(height: int, width: int) -> bytes:
    """A PNG whose (valid, CRC-checked) IHDR header claims height x width RGB pixels, with no
    pixel data: a tiny file that decodes to a huge canvas (or fails to decode)."""
    import struct
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def write_shard(path, rows, sidecar=True):
    """A shard of `rows` (schema.Records, or bytes written as they are) with a stats sidecar
    counting them."""
    with tf.io.TFRecordWriter(path) as w:
        for r in rows:
            w.write(r if isinstance(r, bytes) else schema.encode_record(r))
    if sidecar:
        with open(path + schema.STATS_SUFFIX, "w") as f:
            json.dump({"num_records": len(rows)}, f)
    return path


def webp_bytes(array: np.ndarray, lossless: bool = True, quality: int = 90) -> bytes:
    """WebP of a uint8 [H, W] (grayscale), [H, W, 3] or [H, W, 4] (alpha) array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="WEBP", lossless=lossless, quality=quality)
    return buf.getvalue()


def webp_claiming(height: int, width: int) -> bytes:
    """A 30-byte extended (VP8X) WebP header claiming a height x width canvas, no image data."""
    import struct

    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x10\x00\x00\x00" + (width - 1).to_bytes(
        3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
