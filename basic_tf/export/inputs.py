"""Request checks and image decoding inside the serving graph.

A bad request must fail with an InvalidArgument error that names the input, the entry and what
would be right, before any expensive work, and must leave the server able to answer the next
request. So every check is a `tf.debugging.Assert` (InvalidArgument), and the work that follows
runs under `tf.control_dependencies` on it. Sizes are bounded (`ServingLimits`) so that one
request cannot take the server's memory: counts, bytes per string, and pixels per image, the
last read from the JPEG/PNG/WebP header before anything is decoded.
"""
import dataclasses
import re

import tensorflow as tf

from basic_tf.data.augment import decode_and_center_crop
from basic_tf.data.limits import JPEG_MAGIC, PNG_HEADER, WEBP_HEADER_BYTES, image_height_width
from basic_tf.data.limits import is_webp as is_webp_file
from basic_tf.zeroshot.prompts import PLACEHOLDER   # '{c}': where the class name goes


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Upper bounds on one request (see `serving_limits` for the meaning of each)."""
    max_batch_size: int
    max_image_bytes: int
    max_image_pixels: int
    max_text_bytes: int
    max_classes: int
    max_templates: int
    max_prompts: int


def serving_limits(max_batch_size: int = 64, max_image_bytes: int = 8 << 20,
                   max_image_pixels: int = 16_000_000, max_text_bytes: int = 1024,
                   max_classes: int = 1000, max_templates: int = 100,
                   max_prompts: int = 20_000) -> ServingLimits:
    """Bounds on one request, baked into the exported graph.

    Args:
      max_batch_size: images (or texts for embed_text) per request.
      max_image_bytes: size of one encoded image.
      max_image_pixels: height * width of one image, read from its header before decoding (a
        small PNG can claim a huge canvas).
      max_text_bytes: UTF-8 bytes of one text, class name or template.
      max_classes, max_templates: class names / templates sent to classify_with_labels.
      max_prompts: classes * templates, the prompts classify_with_labels embeds per request.
    """
    limits = ServingLimits(max_batch_size, max_image_bytes, max_image_pixels, max_text_bytes,
                           max_classes, max_templates, max_prompts)
    for field, value in dataclasses.asdict(limits).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"serving_limits.{field}={value!r} must be an integer >= 1")
    return limits


def _first_index(bad: tf.Tensor) -> tf.Tensor:
    """int32 index of the first True in bool [N] (N - 1 if none; -1 if N == 0)."""
    first = tf.argmax(tf.concat([tf.cast(bad, tf.int32), [1]], 0), output_type=tf.int32)
    return tf.minimum(first, tf.size(bad) - 1)


def assert_that(condition: tf.Tensor, template: str, *args) -> tf.Operation:
    """InvalidArgument "<message>" unless condition; template uses {} for each of args."""
    message = tf.strings.format(template, args) if args else tf.constant(template)
    return tf.debugging.Assert(condition, [message])


def _assert_none(bad: tf.Tensor, template: str, *args) -> tf.Operation:
    """Fails unless bool [N] `bad` is all False; the message's first {} is the first bad index."""
    return assert_that(~tf.reduce_any(bad), template, _first_index(bad), *args)


def check_count(values: tf.Tensor, where: str, name: str, max_count: int) -> tf.Operation:
    """values is a list (rank 1) with 1 <= len(values) <= max_count."""
    rank_check = assert_that(tf.equal(tf.rank(values), 1),
                             f"{where}: {name} must be a list of strings (rank 1), got a tensor "
                             "of shape {}", tf.shape(values))
    with tf.control_dependencies([rank_check]):   # the checks after it index a list
        n = tf.size(values)
        return assert_that((n >= 1) & (n <= max_count),
                           f"{where}: {name} has {{}} entries; send between 1 and {max_count}", n)


def check_strings(values: tf.Tensor, where: str, name: str, max_count: int, max_bytes: int,
                  allow_empty: bool = False, need_placeholder: bool = False) -> list:
    """Checks a tf.string [N] input: count, bytes per entry, valid UTF-8, non-blank, '{c}'.

    Returns the assert ops (make the work that uses the values depend on them).
    """
    count_check = check_count(values, where, name, max_count)
    with tf.control_dependencies([count_check]):   # the messages below index a non-empty list
        length = tf.strings.length(values)
        too_long = length > max_bytes
        checks = [count_check, _assert_none(
            too_long, f"{where}: {name}[{{}}] is {{}} bytes; at most {max_bytes} allowed",
            tf.gather(length, _first_index(too_long)))]
        # Valid UTF-8 round-trips unchanged; invalid bytes come back as U+FFFD.
        decoded = tf.strings.unicode_decode(values, "UTF-8", errors="replace")
        checks.append(_assert_none(tf.strings.unicode_encode(decoded, "UTF-8") != values,
                                   f"{where}: {name}[{{}}] is not valid UTF-8 text"))
        if not allow_empty:
            checks.append(_assert_none(tf.strings.length(tf.strings.strip(values)) == 0,
                                       f"{where}: {name}[{{}}] is blank; give a non-blank string"))
        if need_placeholder:
            checks.append(_assert_none(
                ~tf.strings.regex_full_match(values, f"(?s).*{re.escape(PLACEHOLDER)}.*"),
                f"{where}: {name}[{{}}] has no {PLACEHOLDER} where the class name goes, e.g. "
                f"a photo of a {PLACEHOLDER}."))
    return checks


def check_images(images: tf.Tensor, where: str, limits: ServingLimits) -> list:
    """Checks tf.string [N] encoded images: count, bytes, JPEG/PNG/WebP. Returns the assert
    ops."""
    count_check = check_count(images, where, "images", limits.max_batch_size)
    with tf.control_dependencies([count_check]):   # the messages below index a non-empty list
        length = tf.strings.length(images)
        too_big = length > limits.max_image_bytes
        is_jpeg = tf.strings.substr(images, 0, len(JPEG_MAGIC)) == JPEG_MAGIC
        # A PNG starts with its signature and the 13-byte IHDR chunk (33 bytes with its CRC).
        is_png = (tf.strings.substr(images, 0, len(PNG_HEADER)) == PNG_HEADER) & (length >= 33)
        is_webp = is_webp_file(images) & (length >= WEBP_HEADER_BYTES)
        return [count_check,
                _assert_none(too_big, f"{where}: images[{{}}] is {{}} bytes; at most "
                             f"{limits.max_image_bytes} allowed",
                             tf.gather(length, _first_index(too_big))),
                _assert_none(~(is_jpeg | is_png | is_webp), f"{where}: images[{{}}] is not a "
                             "JPEG or PNG file, nor a WebP (send the encoded file bytes, "
                             "base64-encoded in REST JSON)")]


def decode_images(images: tf.Tensor, where: str, limits: ServingLimits, image_size: int,
                  crop_fraction: float, antialias: bool) -> tf.Tensor:
    """tf.string [N] JPEG/PNG/WebP bytes -> float32 [N, image_size, image_size, 3] in [0, 1].

    Checks first (`check_images`, then each image's pixel count from its header), then the
    evaluation view of the data pipeline (`decode_and_center_crop`: central square, resize).
    """
    with tf.control_dependencies(check_images(images, where, limits)):
        images = tf.identity(images)

    def one(args):
        image, index = args
        height_width = image_height_width(image)
        check = assert_that(height_width[0] * height_width[1] <= limits.max_image_pixels,
                            f"{where}: images[{{}}] is {{}}x{{}} pixels; at most "
                            f"{limits.max_image_pixels} pixels allowed",
                            index, height_width[0], height_width[1])
        with tf.control_dependencies([check]):
            return decode_and_center_crop(image, image_size, crop_fraction, antialias)

    return tf.map_fn(one, (images, tf.range(tf.size(images))),
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
