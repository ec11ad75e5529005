"""Image decoding with crop, resize and flip: encoded bytes -> float32 [H, W, 3] in [0, 1].

JPEG takes the fused path: only the header is read to choose the crop window, then
`decode_and_crop_jpeg` decodes just that window (much less work for a small crop of a large
image). Other formats (PNG, WebP) are decoded whole (`decode_rgb`: grayscale and alpha images
to 3 channels) and then cropped. Randomness is stateless, keyed by
a per-example seed [2], so the same example position gives the same crop after a resume.
Undecodable bytes raise an op error: the pipeline skips and counts such records.

The pipeline decodes and crops each example (`decode_window` with `random_box_fn` /
`center_box_fn`, its crop seed and decoder branch drawn per block of records by
basic_tf.data.shard_reader), resizes it (`resize`: pixels still in [0, 255]) and flips and
scales whole batches (`flip_batch`, `normalize`): given the same crop seed and flip, the same
numbers as `decode_and_random_crop`; evaluation's are those of `decode_and_center_crop`.
"""
from typing import Optional, Sequence

import tensorflow as tf

from basic_tf.data import limits

_WHOLE_IMAGE = [[[0.0, 0.0, 1.0, 1.0]]]  # one box = the whole image (normalised y0 x0 y1 x1)


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG, PNG, GIF, BMP or WebP tf.string [] -> uint8 [h, w, 3] (first frame).

    WebP goes through `tf.io.decode_webp`, which gives 3 or 4 channels (with alpha) and refuses
    channels=3 for a WebP with alpha (so does `decode_image`); alpha is dropped, as Pillow's
    convert("RGB") does, and grayscale WebP is already stored as 3 channels.
    """
    return tf.ensure_shape(tf.cond(limits.is_webp(image_bytes),
                                   lambda: _decode_webp(image_bytes),
                                   lambda: _decode_other(image_bytes)), [None, None, 3])


def _decode_webp(image_bytes: tf.Tensor) -> tf.Tensor:
    """WebP -> uint8 [h, w, 3]: all channels decoded (channels=3 is refused with alpha), alpha
    dropped."""
    return tf.io.decode_webp(image_bytes, channels=0)[0, :, :, :3]


def _decode_other(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, GIF, BMP -> uint8 [h, w, 3] (first frame)."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


JPEG, WEBP, OTHER = 0, 1, 2  # the decoders `decode_window` chooses between


def decode_branch(image_bytes: tf.Tensor) -> tf.Tensor:
    """int32, same shape as tf.string image_bytes: JPEG, WEBP or OTHER (vector ops, so the
    training pipeline finds it for a whole block of records at once)."""
    return tf.where(limits.is_jpeg(image_bytes), JPEG,
                    tf.where(limits.is_webp(image_bytes), WEBP, OTHER))


def decode_window(image_bytes: tf.Tensor, box_fn, branch=None,
                  max_jpeg_pixels: Optional[int] = None):
    """Decodes the window box_fn(int32 [3] image shape) -> (offset_hw [2], size_hw [2]).

    JPEG: header-only shape, then fused decode of the window. Others: full decode (as
    `decode_rgb`), then slice. One switch on `branch` (`decode_branch(image_bytes)` unless
    given). Returns uint8 [h, w, 3]; with max_jpeg_pixels, (that, bool []): a JPEG whose SOF
    claims more pixels is not decoded (a 1x1 placeholder is) and the flag says so.
    """
    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        too_large = tf.constant(False)
        if max_jpeg_pixels is not None:
            pixels = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)
            too_large = pixels > max_jpeg_pixels
        offset, size = box_fn(shape)
        window = tf.where(too_large, tf.constant([0, 0, 1, 1]), tf.concat([offset, size], 0))
        image_or_placeholder = tf.where(too_large, limits.one_pixel_jpeg(), image_bytes)
        return tf.image.decode_and_crop_jpeg(image_or_placeholder, window, channels=3), too_large

    def crop(image):
        image = tf.ensure_shape(image, [None, None, 3])
        offset, size = box_fn(tf.shape(image))
        return (tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [3]], 0)),
                tf.constant(False))

    def webp():
        return crop(_decode_webp(image_bytes))

    def other():
        return crop(_decode_other(image_bytes))

    branch = decode_branch(image_bytes) if branch is None else branch
    image, too_large = tf.switch_case(branch, [jpeg, webp, other])
    image = tf.ensure_shape(image, [None, None, 3])
    return image if max_jpeg_pixels is None else (image, too_large)


def resize(crop: tf.Tensor, image_size: int, antialias: bool) -> tf.Tensor:
    """uint8 [h, w, 3] -> float32 [image_size, image_size, 3], still in [0, 255] (`normalize`
    finishes it, per batch in the pipeline)."""
    image = tf.image.resize(crop, [image_size, image_size], method="bilinear",
                            antialias=antialias)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def normalize(images: tf.Tensor) -> tf.Tensor:
    """float32 pixels in [0, 255] (any shape) -> [0, 1] (clipped: antialiased resizes overshoot)."""
    return tf.clip_by_value(images / 255.0, 0.0, 1.0)


def flip_decision(flip_seed: tf.Tensor) -> tf.Tensor:
    """bool []: whether `tf.image.stateless_random_flip_left_right(image, flip_seed)` flips
    (its own test: a uniform draw below 0.5)."""
    return tf.random.stateless_uniform([], flip_seed, 0, 1.0) < 0.5


def flip_batch(images: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
    """[b, H, W, C] (any dtype), bool [b] -> the images with rows flips[i] mirrored left-right.

    Row gathers, not a broadcast tf.where (whose broadcasting select is slow on big batches)."""
    b = tf.shape(images)[0]
    both = tf.concat([images, tf.reverse(images, [2])], 0)
    return tf.gather(both, tf.range(b) + b * tf.cast(flips, tf.int32))


def whole_box(shape):
    """The window of the whole image, for `decode_window`: (offset 0, size shape[:2])."""
    return tf.zeros([2], tf.int32), shape[:2]


def random_box_fn(crop_seed: tf.Tensor, area_range: Sequence[float] = (0.5, 1.0),
                  aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3)):
    """The training view's window for `decode_window`: a random crop covering `area_range` of
    the image with an aspect ratio in `aspect_ratio_range` (the whole image when 10 draws
    miss). crop_seed: int [2]. An area range starting at 1 can only give the whole image (a
    crop of the whole area): `whole_box`, nothing drawn."""
    if area_range[0] >= 1.0:
        return whole_box

    def random_box(shape):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.constant(_WHOLE_IMAGE), seed=crop_seed, min_object_covered=0.0,
            aspect_ratio_range=list(aspect_ratio_range), area_range=list(area_range),
            max_attempts=10, use_image_if_no_bounding_boxes=True)
        return begin[:2], size[:2]
    return random_box


def random_crop_window(image_bytes: tf.Tensor, crop_seed: tf.Tensor, image_size: int,
                       area_range: Sequence[float] = (0.5, 1.0),
                       aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                       antialias: bool = False) -> tf.Tensor:
    """The per-example part of the training view: decode the `random_box_fn` window and resize
    it to a square. Returns float32 [image_size, image_size, 3] in [0, 255]."""
    window = decode_window(image_bytes, random_box_fn(crop_seed, area_range, aspect_ratio_range))
    return resize(window, image_size, antialias)


def decode_and_random_crop(image_bytes: tf.Tensor, seed: tf.Tensor, image_size: int,
                           area_range: Sequence[float] = (0.5, 1.0),
                           aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                           random_flip: bool = True, antialias: bool = False) -> tf.Tensor:
    """Training view: a random crop covering `area_range` of the image with an aspect ratio in
    `aspect_ratio_range`, resized to a square, maybe flipped. seed: int [2] (split into the crop
    and the flip seed; the pipeline draws both per block instead, basic_tf.data.keyed_random).

    Returns float32 [image_size, image_size, 3] in [0, 1].
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = normalize(random_crop_window(image_bytes, crop_seed, image_size, area_range,
                                         aspect_ratio_range, antialias))
    if random_flip:
        image = flip_batch(image[None], flip_decision(flip_seed)[None])[0]
    return image


def center_box_fn(crop_fraction: float = 1.0):
    """Evaluation's window for `decode_window`: the central square of side crop_fraction *
    min(height, width)."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction={crop_fraction} must be in (0, 1]")

    def center_box(shape):
        hw = shape[:2]
        side = tf.cast(tf.cast(tf.reduce_min(hw), tf.float32) * crop_fraction, tf.int32)
        side = tf.maximum(side, 1)
        return (hw - side) // 2, tf.stack([side, side])
    return center_box


def center_crop_window(image_bytes: tf.Tensor, image_size: int, crop_fraction: float = 1.0,
                       antialias: bool = False) -> tf.Tensor:
    """`decode_and_center_crop` before `normalize`: float32 [image_size, image_size, 3] in
    [0, 255]."""
    return resize(decode_window(image_bytes, center_box_fn(crop_fraction)), image_size,
                  antialias)


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int, crop_fraction: float = 1.0,
                           antialias: bool = False) -> tf.Tensor:
    """Evaluation view: the central square of side crop_fraction * min(height, width), resized.

    Returns float32 [image_size, image_size, 3] in [0, 1].
    """
    return normalize(center_crop_window(image_bytes, image_size, crop_fraction, antialias))
