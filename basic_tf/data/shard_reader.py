"""One shard's records -> blocks of planned rows: parsed, checked and given their random draws
with vector ops over blocks of records, so the pipeline's only per-record work is the decode.

    TFRecord frames -> blocks of BLOCK records -> count -> parse + plan (per block)
    -> a block with a record that does not parse: parsed again record by record
    -> blocks of rows, and one SHARD_END row at the end

Each row (the pipeline unbatches the blocks; `b` = rows in a block):
  image       tf.string   the encoded image ("" for rows that are not usable records)
  caption     tf.string   the chosen caption: a keyed random pick among the non-empty ones in
                          training, the first non-empty one in evaluation
  flip        bool        training's left-right flip
  crop_seed   int64 [2]   the seed of training's random crop window
  branch      int32       the image decoder (augment.JPEG, WEBP or OTHER)
  labels      int32, example_id tf.string
  kind        int32       RECORD, BAD (skipped for `cause`, nothing to decode) or SHARD_END
  cause       int32       a skips cause for BAD rows (skips.OK otherwise)
  missing     int64       on SHARD_END: records lost from a truncated tail (stats sidecar)

Checked here, from the block: no non-empty caption (empty_caption), PNG / WebP headers that
claim too many pixels (too_large) or bytes that are no JPEG, PNG or WebP (bad_image); a JPEG's
SOF is found per record in the decode (`tf.image.extract_jpeg_shape`), so a JPEG's bound is
checked there. Random draws are keyed by (run seed, file, visit of the file, record number):
the same record in the same visit gets the same crop, flip and caption after a resume.

A record that is not an Example of the record format makes the block's parse fail; that block
(rare: a shard written by something else, a metadata column of the wrong type) is read again
from the file and parsed record by record, and each failing record becomes a BAD row with cause
parse_error.
"""
import tensorflow as tf

from basic_tf.data import augment, img2dataset, keyed_random, schema, skips
from basic_tf.data import limits as limits_lib

RECORD, SHARD_END, END, BAD = 0, 1, 2, 3
# Records parsed and planned together. A block's plan is a fixed set of vector ops, costing mostly
# per op, not per record: on the demo's records the reader gave 17,700 rows/s with blocks of 32
# and 38,400 with 256 (2026-12-08, 2 cores).
BLOCK = 256
_WINDOW = 2  # blocks looked at together for ones to read again (512 records in flight)


def _parse_basic_tf(serialized):
    ex = tf.io.parse_example(serialized, schema.FEATURE_SPEC)
    return (ex[schema.IMAGE_KEY], ex[schema.CAPTION_KEY],
            tf.cast(ex[schema.LABEL_KEY], tf.int32), ex[schema.ID_KEY])


_PARSERS = {"basic_tf": _parse_basic_tf, "img2dataset": img2dataset.parse_examples}


def rows(count, kind, cause=skips.OK, missing=0) -> dict:
    """`count` rows of `kind` with nothing to decode (BAD, SHARD_END, END)."""
    count = tf.convert_to_tensor(count, tf.int32)
    fill = lambda value, dtype: tf.fill([count], tf.constant(value, dtype))  # noqa: E731
    return {"image": fill("", tf.string), "caption": fill("", tf.string),
            "flip": fill(False, tf.bool), "crop_seed": tf.zeros([count, 2], tf.int64),
            "branch": fill(augment.OTHER, tf.int32), "labels": fill(schema.NO_LABEL, tf.int32),
            "example_id": fill("", tf.string), "kind": fill(kind, tf.int32),
            "cause": fill(cause, tf.int32), "missing": tf.fill([count], tf.cast(missing, tf.int64))}


class BlockPlanner:
    """Parse + plan of a block of records (see module doc)."""

    def __init__(self, *, record_format: str, training: bool, seed: int, random_flip: bool,
                 max_image_pixels: int):
        self.parse = _PARSERS[record_format]
        self.training, self.seed, self.random_flip = training, seed, random_flip
        self.max_image_pixels = max_image_pixels

    def __call__(self, records: tf.Tensor, numbers: tf.Tensor, key: tf.Tensor) -> dict:
        """records tf.string [b], their int64 [b] numbers in the shard, the int64 [] key of
        this visit of the file -> rows [b]. Raises if a record does not parse."""
        image, captions, labels, example_id = self.parse(records)
        captions = tf.strings.strip(captions)
        kept = tf.ragged.boolean_mask(captions, tf.strings.length(captions) > 0)
        n = tf.cast(kept.row_lengths(), tf.int32)
        words = keyed_random.bits(key, numbers, 4)
        pick = tf.zeros_like(n)
        if self.training:
            pick = tf.cast(keyed_random.uniform(words[:, 0]) * tf.cast(n, tf.float32), tf.int32)
            pick = tf.minimum(pick, tf.maximum(n - 1, 0))
        flat = tf.concat([kept.flat_values, [""]], 0)
        caption = tf.gather(flat, tf.where(n > 0, tf.cast(kept.row_starts(), tf.int32) + pick,
                                           tf.size(flat) - 1))
        flip = tf.fill(tf.shape(n), self.training and self.random_flip) & (
            keyed_random.uniform(words[:, 1]) < 0.5)
        branch = augment.decode_branch(image)
        height_width = limits_lib.png_webp_height_width(image)
        cause = tf.where(n == 0, skips.EMPTY_CAPTION, tf.where(
            (branch != augment.JPEG) & (height_width[:, 0] < 0), skips.BAD_IMAGE, tf.where(
                height_width[:, 0] * height_width[:, 1] > self.max_image_pixels,
                skips.TOO_LARGE, skips.OK)))
        usable = cause == skips.OK
        return {"image": tf.where(usable, image, ""), "caption": caption, "flip": flip,
                "crop_seed": keyed_random.seeds(words[:, 2:4]), "branch": branch,
                "labels": labels, "example_id": example_id,
                "kind": tf.where(usable, RECORD, BAD), "cause": tf.cast(cause, tf.int32),
                "missing": tf.zeros_like(numbers)}


def read_shard(file_id, visit, path, expected, planner: BlockPlanner) -> tf.data.Dataset:
    """One visit of one shard -> blocks of rows (module doc), the last one holding the
    SHARD_END row.

    file_id: int64 [] the file's place in the whole file list (all hosts); visit: int64 [] this
    pipeline's count of file visits; expected: int64 record count from the stats sidecar (-1:
    unknown, then a truncated tail cannot be counted).
    """
    key = keyed_random.combine(planner.seed, file_id, visit)
    blocks = tf.data.TFRecordDataset(path).ignore_errors().batch(BLOCK)  # stops at a bad frame
    blocks = blocks.map(lambda r: (r, False)).concatenate(
        tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), True)))

    def count(n, block):
        records, is_end = block
        m = tf.shape(records, out_type=tf.int64)[0]
        return n + m, {"records": records, "first": n, "is_end": is_end}

    def plan(block):
        first = block["first"]
        stop = first + tf.shape(block["records"], out_type=tf.int64)[0]
        out = planner(block["records"], tf.range(first, stop), key)
        missing = tf.where(expected >= 0, tf.maximum(expected - first, 0),
                           tf.constant(0, tf.int64))
        end = rows(tf.cast(block["is_end"], tf.int32), SHARD_END, missing=missing)
        return {k: tf.concat([out[k], end[k]], 0) for k in out}, first, stop

    def gaps(done, planned):
        block, first, stop = planned  # records [done, first) were in blocks that did not parse
        return stop, {"block": block, "redo": tf.stack([done, first])}

    def redone(x):
        start, stop = x["redo"][0], x["redo"][1]
        return _parse_one_by_one(path, start, stop, planner, key).concatenate(
            tf.data.Dataset.from_tensors(x["block"]))

    def window(w):  # blocks that need no second reading pass on as they are
        w = tf.data.Dataset.zip(w)
        as_read = w.filter(lambda x: x["redo"][0] == x["redo"][1]).map(lambda x: x["block"])
        return as_read.concatenate(w.filter(lambda x: x["redo"][0] < x["redo"][1]).flat_map(redone))

    planned = blocks.scan(tf.constant(0, tf.int64), count).map(plan).ignore_errors()
    # a dataset made per window of blocks, not per block
    return planned.scan(tf.constant(0, tf.int64), gaps).window(_WINDOW).flat_map(window)


def _parse_one_by_one(path, start, stop, planner: BlockPlanner, key) -> tf.data.Dataset:
    """Records [start, stop) of the shard, each parsed alone -> blocks of one row: its planned
    row, or a BAD row with cause parse_error for a record that does not parse."""
    records = tf.data.TFRecordDataset(path).ignore_errors().skip(start).take(stop - start)
    parsed = records.enumerate(start).map(
        lambda i, r: (planner(r[None], i[None], key), i)).ignore_errors()
    parsed = parsed.concatenate(tf.data.Dataset.from_tensors((rows(0, RECORD), stop)))

    def with_failures(last, block_number):
        block, number = block_number
        bad = rows(tf.cast(number - last - 1, tf.int32), BAD, cause=skips.PARSE_ERROR)
        return number, {k: tf.concat([bad[k], block[k]], 0) for k in block}

    return parsed.scan(start - 1, with_failures)
