"""Size bounds on one input record, and how to read an image's size without decoding it.

One caption of 1 MiB costs ~40 s of SentencePiece each time it comes round, and a 17 KB PNG can
claim a 12000x12000 canvas (0.4 GB decoded), so the writer (tools/make_tfrecords.py), the
training and evaluation pipelines and `--validate` all bound both, with the same numbers
(`input_limits`; gin binds it as `input_limits.*` at the top, basic_tf/from_gin_data.py).
Serving bounds its requests the same way (basic_tf.export.inputs): pixels are read from the
JPEG SOF, PNG IHDR or WebP (VP8 / VP8L / VP8X chunk) header before anything is decoded.

  captions longer than max_caption_bytes are cut (at a UTF-8 character boundary) and counted:
    the tokenizer keeps only seq_len tokens anyway, so the cut loses nothing a model sees;
  images with more than max_image_pixels pixels are skipped and counted ("too_large").
"""
import dataclasses
import functools
import struct
from typing import Optional, Tuple

import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"   # signature, IHDR length and type
WEBP_HEADER_BYTES = 30  # RIFF, size, WEBP, first chunk's type and size, its first 10 bytes


def is_webp_bytes(data: bytes) -> bool:
    """True for a RIFF WebP file (b"RIFF", 4 size bytes, b"WEBP")."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Upper bounds on one record (see `input_limits`)."""
    max_image_pixels: int
    max_caption_bytes: int


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


def is_webp(image: tf.Tensor) -> tf.Tensor:
    """bool, same shape as tf.string `image`: the bytes start like a RIFF WebP file. Padded
    first: substr at offset 8 of a shorter string raises (a regex would miss size bytes that are
    not UTF-8)."""
    head = tf.strings.join([tf.strings.substr(image, 0, 12), "\0" * 12])
    return ((tf.strings.substr(head, 0, 4) == b"RIFF")
            & (tf.strings.substr(head, 8, 4) == b"WEBP"))


def is_jpeg(image: tf.Tensor) -> tf.Tensor:
    """bool, same shape as tf.string `image`: the bytes start with a JPEG SOI marker."""
    return tf.strings.substr(image, 0, len(JPEG_MAGIC)) == JPEG_MAGIC


def png_webp_height_width(images: tf.Tensor) -> tf.Tensor:
    """tf.string [k] encoded images -> int64 [k, 2] (height, width) from the PNG IHDR or the
    WebP header; [-1, -1] for JPEG (its SOF is found by walking its segments:
    `image_height_width`) and for bytes that are none of these with a whole header.

    Vector ops over the whole block (the training pipeline reads its records' headers a block
    at a time; per record, a dozen string ops cost more than decoding a small PNG).
    """
    length = tf.strings.length(images)
    head = tf.strings.join([tf.strings.substr(images, 0, WEBP_HEADER_BYTES), "\0" * 32])
    is_png = (length >= len(PNG_HEADER) + 8) & (
        tf.strings.substr(head, 0, len(PNG_HEADER)) == PNG_HEADER)
    webp_header = (length >= WEBP_HEADER_BYTES) & is_webp(head)
    # IHDR: width then height, big-endian uint32 at byte 16.
    width_height = tf.reshape(tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.int32,
                                               little_endian=False), [-1, 2])  # [k, 2] for k = 0
    png = tf.cast(tf.reverse(width_height, [-1]), tf.int64) & 0xFFFFFFFF
    unknown = tf.constant([-1, -1], tf.int64)
    return tf.where(is_png[:, None], png, tf.where(
        webp_header[:, None], _webp_height_width(head), unknown))


def image_height_width(image: tf.Tensor) -> tf.Tensor:
    """int64 [2] (height, width) from the JPEG SOF, PNG IHDR or WebP header of one tf.string []
    encoded image, without decoding it; [-1, -1] for bytes that are none of these with a whole
    header. A JPEG whose header is corrupt raises InvalidArgument.

    No tf.cond: the JPEG reader gets a 1x1 JPEG in place of bytes that are not a JPEG.
    """
    jpeg = is_jpeg(image)
    jpeg_height_width = tf.cast(
        tf.image.extract_jpeg_shape(tf.where(jpeg, image, one_pixel_jpeg()))[:2], tf.int64)
    return tf.where(jpeg, jpeg_height_width, png_webp_height_width(image[None])[0])


@functools.lru_cache(maxsize=None)
def one_pixel_jpeg() -> bytes:
    """A valid 1x1 JPEG file (made once, eagerly, also when first asked for inside a graph)."""
    with tf.init_scope():
        return tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8)).numpy()


def _webp_height_width(images: tf.Tensor) -> tf.Tensor:
    """int64 [k, 2] from the first chunk of tf.string [k] WebP files of >= WEBP_HEADER_BYTES
    bytes (see `_webp_header_height_width`, its Python twin, for the layout); [-1, -1] for
    another chunk."""
    b = tf.reshape(tf.cast(tf.io.decode_raw(tf.strings.substr(images, 20, 10), tf.uint8),
                           tf.int64), [-1, 10])

    def le(start, n):  # little-endian unsigned integer of bytes 20+start .. 20+start+n-1
        return sum(tf.bitwise.left_shift(b[:, start + i], 8 * i) for i in range(n))

    chunk = tf.strings.substr(images, 12, 4)[:, None]
    bits = le(1, 4)
    lossless = tf.stack([tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
                         tf.bitwise.bitwise_and(bits, 0x3FFF) + 1], axis=-1)
    lossy = tf.stack([tf.bitwise.bitwise_and(le(8, 2), 0x3FFF),
                      tf.bitwise.bitwise_and(le(6, 2), 0x3FFF)], axis=-1)
    extended = tf.stack([le(7, 3) + 1, le(4, 3) + 1], axis=-1)
    return tf.where(chunk == b"VP8 ", lossy, tf.where(chunk == b"VP8L", lossless, tf.where(
        chunk == b"VP8X", extended, tf.constant([-1, -1], tf.int64))))


def _webp_header_height_width(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) of a WebP file from its first chunk (bytes 12..29), None if unknown.

    VP8 (lossy): 14-bit width and height, little-endian, at bytes 26 and 28 (after the frame tag
    and start code). VP8L (lossless): after the 0x2f signature at byte 20, one little-endian
    uint32 holding width - 1 (bits 0-13) and height - 1 (bits 14-27). VP8X (extended: alpha,
    animation): canvas width - 1 and height - 1 as 24-bit little-endian at bytes 24 and 27.
    """
    if len(data) < WEBP_HEADER_BYTES:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[27:30], "little") + 1,
                int.from_bytes(data[24:27], "little") + 1)
    return None


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
    the PNG IHDR, the JPEG SOF or the WebP header, or None if there is no such header (nothing
    decoded; Pillow is not used because it refuses to even open a header claiming > 179 MP)."""
    if is_webp_bytes(data):
        return _webp_header_height_width(data)
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
