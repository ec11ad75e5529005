"""Size bounds on one input record, and how to read an image's size without decoding it.

One caption of 1 MiB costs ~40 s of SentencePiece each time it comes round, and a 17 KB PNG can
claim a 12000x12000 canvas (0.4 GB decoded), so the writer (tools/make_tfrecords.py), the
training and evaluation pipelines and `--validate` all bound both, with the same numbers
(`input_limits`, gin). Serving bounds its requests the same way (basic_tf.export.inputs):
pixels are read from the JPEG SOF or PNG IHDR header before anything is decoded.

  captions longer than max_caption_bytes are cut (at a UTF-8 character boundary) and counted:
    the tokenizer keeps only seq_len tokens anyway, so the cut loses nothing a model sees;
  images with more than max_image_pixels pixels are skipped and counted ("too_large").
"""
import dataclasses
import struct
from typing import Optional, Tuple

import gin
import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"   # signature, IHDR length and type


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Upper bounds on one record (see `input_limits`)."""
    max_image_pixels: int
    max_caption_bytes: int


@gin.configurable
def input_limits(max_image_pixels: int = 16_000_000,
                 max_caption_bytes: int = 1024) -> InputLimits:
    """The bounds on one record used when writing, reading and validating shards.

    Args:
      max_image_pixels: height * width of one image (from its header); larger images are
        skipped. 16 MP (as serving_limits) keeps one decoded image under 48 MB.
      max_caption_bytes: UTF-8 bytes of one caption; longer captions are cut. 1024 bytes is
        ~200 tokens, several times any seq_len of BASIC.
    """
    limits = InputLimits(max_image_pixels, max_caption_bytes)
    for field, value in dataclasses.asdict(limits).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"input_limits.{field}={value!r} must be an integer >= 1")
    return limits


def image_height_width(image: tf.Tensor) -> tf.Tensor:
    """int64 [2] (height, width) from the JPEG SOF or PNG IHDR header of one tf.string []
    encoded image, without decoding it; [-1, -1] for bytes that are neither JPEG nor a PNG with
    a whole IHDR header. A JPEG whose header is corrupt raises InvalidArgument."""
    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(image)[:2], tf.int64)

    def png():   # IHDR: width then height, big-endian uint32 at byte 16.
        width_height = tf.io.decode_raw(tf.strings.substr(image, 16, 8), tf.int32,
                                        little_endian=False)
        return tf.reshape(tf.cast(tf.reverse(width_height, [0]), tf.int64) & 0xFFFFFFFF, [2])

    def unknown():
        return tf.constant([-1, -1], tf.int64)

    is_jpeg = tf.strings.substr(image, 0, len(JPEG_MAGIC)) == JPEG_MAGIC
    is_png = ((tf.strings.length(image) >= len(PNG_HEADER) + 8)
              & (tf.strings.substr(image, 0, len(PNG_HEADER)) == PNG_HEADER))
    return tf.cond(is_jpeg, jpeg, lambda: tf.cond(is_png, png, unknown))


def cut_captions(captions: tf.Tensor, max_bytes: int) -> tuple:
    """tf.string [n] -> (captions cut to <= max_bytes UTF-8 bytes, bool [n] which were cut).

    The cut drops a partial UTF-8 character at the end, so the tokenizer sees valid text.
    """
    too_long = tf.strings.length(captions) > max_bytes
    cut = tf.strings.unicode_transcode(tf.strings.substr(captions, 0, max_bytes), "UTF-8",
                                       "UTF-8", errors="ignore")
    return tf.where(too_long, cut, captions), too_long


def cut_caption_text(caption: str, max_bytes: int) -> str:
    """Python twin of `cut_captions` for one caption (the writer's cut)."""
    data = caption.encode("utf-8")
    if len(data) <= max_bytes:
        return caption
    return data[:max_bytes].decode("utf-8", "ignore")


def check_image_pixels(image: tf.Tensor, max_pixels: int) -> tf.Operation:
    """An Assert (InvalidArgument) that one encoded image's header claims at most `max_pixels`
    pixels: make the decode depend on it, so a pipeline that skips records on errors skips an
    oversized image before decoding it."""
    height_width = image_height_width(image)
    return tf.debugging.Assert(height_width[0] * height_width[1] <= max_pixels,
                               ["image of", height_width, "pixels is over "
                                f"input_limits.max_image_pixels={max_pixels}"])


def header_height_width(data: bytes) -> Optional[Tuple[int, int]]:
    """Python twin of `image_height_width` for the writer and --validate: (height, width) from
    the PNG IHDR or the JPEG SOF header, or None if there is no such header (nothing decoded;
    Pillow is not used because it refuses to even open a header claiming > 179 MP)."""
    if data[:len(PNG_HEADER)] == PNG_HEADER and len(data) >= len(PNG_HEADER) + 8:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data[:len(JPEG_MAGIC)] != JPEG_MAGIC:
        return None
    pos = 2
    while pos + 4 <= len(data):  # segments: 0xFF, marker, big-endian length (incl. itself)
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return height, width
        pos += 2 + length
    return None
