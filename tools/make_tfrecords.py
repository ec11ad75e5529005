r"""Writes basic_tf TFRecord shards from a table, a class-folder tree, arrays or a local TFDS set;
or, with --validate, reads shards back and reports corrupt or empty records.

Examples:
  # CSV/JSONL with image path and caption columns (paths relative to the table's folder, and
  # inside it: others are refused unless --allow_outside_paths)
  python3 tools/make_tfrecords.py --source=table --input=pairs.csv --output_prefix=/data/pairs/train
  # class folders root/<class name>/*.jpg, captions from templates; labels number the folders
  # in sorted name order, listed in /data/img/train.class_names.json (use it as --class_names)
  python3 tools/make_tfrecords.py --source=folder --input=/images --output_prefix=/data/img/train
  # Fashion-MNIST from the Debian package dataset-fashion-mnist
  python3 tools/make_tfrecords.py --source=fashion_mnist --split=train \
      --output_prefix=/data/fm/train
  # .npz with 'images' (uint8 [N,H,W(,3)]), 'labels' and 'class_names' or 'captions'
  python3 tools/make_tfrecords.py --source=numpy --input=arrays.npz --output_prefix=/data/np/train
  # webdataset tars as img2dataset writes them (brace ranges and globs), 2 tars at a time;
  # __key__ becomes the id, <key>.json the metadata; shards <prefix>-<tar stem>-*.tfrecord
  python3 tools/make_tfrecords.py --source=webdataset --input='shards/{00000..00099}.tar' \
      --output_prefix=/data/laion/train --num_workers=2
  # a TFDS dataset already prepared in --tfds_data_dir (never downloads)
  python3 tools/make_tfrecords.py --source=tfds --tfds_name=coco_captions \
      --caption_key=captions/text --tfds_data_dir=~/tensorflow_datasets --output_prefix=/data/coco/train
  # check shards: exits 1 when any record is corrupt, empty, too large or lost
  python3 tools/make_tfrecords.py --validate='/data/fm/train-*.tfrecord'

Output: <prefix>-00000-of-000NN.tfrecord shards (<= --max_shard_mb each), a
<shard>.stats.json beside each shard and <prefix>.summary.json (records written and skipped).
A missing or unreadable image file is skipped, counted and logged with its row (--strict:
abort); on any failure no partial (.tmp) shard is left behind.
"""
import sys

from absl import app, flags

from basic_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, ["table", "folder", "numpy", "fashion_mnist", "tfds",
                                    "webdataset"],
                  "Where records come from: table = .csv/.jsonl of image paths and captions; "
                  "folder = <input>/<class name>/<images>; numpy = .npz arrays; fashion_mnist = "
                  "the Debian package; tfds = a locally prepared TFDS dataset; webdataset = "
                  "tars of <key>.jpg|png|webp + <key>.txt (+ <key>.json), as img2dataset "
                  "writes them.")
flags.DEFINE_string("input", None, "Table file, folder root or .npz file (per --source); "
                    "webdataset: tars, with brace ranges and globs "
                    "('shards/{00000..00099}.tar', several joined by '::').")
flags.DEFINE_integer("num_workers", 1, "webdataset: tars converted at once, one process each "
                     "(records are de-duplicated within a tar).")
flags.DEFINE_string("output_prefix", None, "Shard path prefix, e.g. /data/fm/train.")
flags.DEFINE_string("validate", None, "Glob of shards to check instead of writing.")
flags.DEFINE_float("max_shard_mb", 256.0, "Start a new shard before one passes this size (MiB).")
flags.DEFINE_integer("limit", 0, "Write at most this many source records (0: all).")
flags.DEFINE_bool("dedupe_records", True, "Skip records whose image and captions repeat.")
flags.DEFINE_bool("check_images", True, "Skip images that Pillow cannot decode.")
flags.DEFINE_bool("strict", False, "table/folder: abort (naming the file and row) on a missing "
                  "or unreadable image file instead of skipping and counting it.")
flags.DEFINE_integer("max_caption_bytes", None, "Cut captions longer than this many UTF-8 "
                     "bytes (default: input_limits' 1024, as the training pipeline).")
flags.DEFINE_integer("max_image_pixels", None, "Skip images whose header claims more pixels "
                     "(height * width; default: input_limits' 16000000, as the training "
                     "pipeline). Also used by --validate.")
flags.DEFINE_multi_string("template", None, "Caption template, '{c}' = the class name (as in "
                          "prompt templates; '{}' is accepted); repeat the flag for several; "
                          "default: 10 built-in templates.")
flags.DEFINE_string("image_column", "image", "table: column of image paths.")
flags.DEFINE_string("caption_column", "caption", "table: caption column(s), comma-separated.")
flags.DEFINE_string("label_column", None, "table: integer label column (optional).")
flags.DEFINE_string("id_column", None, "table: example id column (default: the image path).")
flags.DEFINE_string("image_root", None, "table: folder image paths are relative to "
                    "(default: the table's folder).")
flags.DEFINE_bool("allow_outside_paths", False, "table: accept image paths outside the "
                  "table's folder (or --image_root): absolute ones or '..' past it. Refused by "
                  "default, naming the row, so that a table cannot pack any readable image.")
flags.DEFINE_string("class_names_file", None, "Class names, one per line in label order "
                    "(table labels, numpy arrays without 'class_names').")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg", "webp"], "numpy/fashion_mnist: how to encode "
                  "arrays (png is lossless; jpeg enables the fused decode-and-crop; webp is "
                  "lossy at --jpeg_quality).")
flags.DEFINE_integer("jpeg_quality", 95, "numpy/fashion_mnist: JPEG quality.")
flags.DEFINE_string("split", "train", "fashion_mnist/tfds: split to write.")
flags.DEFINE_string("fashion_mnist_dir", None, "fashion_mnist: IDX folder (default: the "
                    "Debian package's).")
flags.DEFINE_string("tfds_name", None, "tfds: dataset name (with optional :version).")
flags.DEFINE_string("tfds_data_dir", None, "tfds: where the dataset is prepared.")
flags.DEFINE_string("image_key", None, "tfds: image feature (default: the first Image).")
flags.DEFINE_string("caption_key", None, "tfds: text feature, nested with '/' "
                    "(captions/text); without it captions come from templates and labels.")
flags.DEFINE_string("label_key", "label", "tfds: ClassLabel feature.")


def _records_and_total():
    from basic_tf.data import fashion_mnist, sources

    templates = tuple(FLAGS.template) if FLAGS.template else None  # None: built-in set
    class_names = None
    if FLAGS.class_names_file:
        import tensorflow as tf

        with tf.io.gfile.GFile(FLAGS.class_names_file, "r") as f:
            class_names = [line.strip() for line in f.read().splitlines() if line.strip()]
    src = FLAGS.source
    if src in ("table", "folder", "numpy") and not FLAGS.input:
        raise app.UsageError(f"--source={src} needs --input")
    if src == "table":
        return sources.from_table(FLAGS.input, FLAGS.image_column, FLAGS.caption_column,
                                  FLAGS.label_column, FLAGS.id_column, FLAGS.image_root,
                                  class_names, strict=FLAGS.strict,
                                  allow_outside_paths=FLAGS.allow_outside_paths), None
    if src == "folder":
        return sources.from_folder(FLAGS.input, templates, strict=FLAGS.strict), None
    if src == "numpy":
        import io

        import numpy as np
        import tensorflow as tf

        with tf.io.gfile.GFile(FLAGS.input, "rb") as f:
            arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        if "images" not in arrays:
            raise app.UsageError(f"{FLAGS.input}: no 'images' array; it has {list(arrays)}")
        names = class_names or (list(arrays["class_names"]) if "class_names" in arrays else None)
        captions = arrays["captions"].tolist() if "captions" in arrays else None
        labels = arrays["labels"] if "labels" in arrays else None
        return sources.from_arrays(arrays["images"], labels, names, captions, templates,
                                   name=FLAGS.output_prefix.rsplit("/", 1)[-1],
                                   image_format=FLAGS.image_format,
                                   jpeg_quality=FLAGS.jpeg_quality), len(arrays["images"])
    if src == "fashion_mnist":
        kwargs = {"data_dir": FLAGS.fashion_mnist_dir} if FLAGS.fashion_mnist_dir else {}
        images, labels = fashion_mnist.load(FLAGS.split, **kwargs)
        return sources.from_arrays(images, labels, fashion_mnist.CLASS_NAMES, None, templates,
                                   name=f"fashion_mnist/{FLAGS.split}",
                                   image_format=FLAGS.image_format,
                                   jpeg_quality=FLAGS.jpeg_quality), len(images)
    if not FLAGS.tfds_name:
        raise app.UsageError("--source=tfds needs --tfds_name")
    return sources.from_tfds(FLAGS.tfds_name, FLAGS.split, FLAGS.tfds_data_dir, FLAGS.image_key,
                             FLAGS.caption_key, FLAGS.label_key, templates), None


def _convert_webdataset(bounds) -> int:
    from basic_tf.data import webdataset

    if not FLAGS.input:
        raise app.UsageError("--source=webdataset needs --input (tars: brace ranges, globs)")
    try:
        tars = webdataset.list_tars(FLAGS.input, "--input")
    except FileNotFoundError as e:
        print(f"{e}\nnothing written to {FLAGS.output_prefix}-*", file=sys.stderr)
        return 1
    total = webdataset.convert_tars(
        tars, FLAGS.output_prefix, FLAGS.num_workers,
        max_shard_bytes=int(FLAGS.max_shard_mb * (1 << 20)), dedupe_records=FLAGS.dedupe_records,
        check_images=FLAGS.check_images, bounds=bounds)
    skipped = ", ".join(f"{c} {total['skipped_sources'].get(c, 0)}"
                        for c in webdataset.SKIP_CAUSES)
    print(f"wrote {total.get('written', 0)} records from {len(tars)} tars in "
          f"{len(total['shards'])} shards ({FLAGS.output_prefix}-*.tfrecord); skipped samples: "
          f"{skipped}; records: {total.get('duplicate_records', 0)} duplicate, "
          f"{total.get('empty_records', 0)} without caption, {total.get('bad_images', 0)} bad "
          f"image, {total.get('too_large_images', 0)} image over {bounds.max_image_pixels} "
          f"pixels; {total.get('cut_captions', 0)} captions cut to {bounds.max_caption_bytes} "
          "bytes")
    return 0 if total.get("written") else 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from basic_tf.data import limits

    bounds = limits.input_limits(**{k: getattr(FLAGS, k) for k in (
        "max_image_pixels", "max_caption_bytes") if getattr(FLAGS, k) is not None})
    if FLAGS.validate:
        from basic_tf.data import schema, validate

        report = validate.validate_shards(schema.list_shards(FLAGS.validate), bounds=bounds)
        print(report)
        return 1 if report.problems else 0
    if not FLAGS.source or not FLAGS.output_prefix:
        raise app.UsageError("give --source and --output_prefix (or --validate=GLOB)")
    import itertools

    from basic_tf.data import writer

    if FLAGS.source == "webdataset":
        return _convert_webdataset(bounds)
    records, total = _records_and_total()
    if FLAGS.limit:
        records = itertools.islice(records, FLAGS.limit)
        total = min(total, FLAGS.limit) if total else FLAGS.limit
    try:
        summary = writer.write_tfrecords(records, FLAGS.output_prefix,
                                         max_shard_bytes=int(FLAGS.max_shard_mb * (1 << 20)),
                                         dedupe_records=FLAGS.dedupe_records,
                                         # arrays were just encoded by us: no need to re-check
                                         check_images=FLAGS.check_images and FLAGS.source not in (
                                             "numpy", "fashion_mnist"),
                                         total=total, bounds=bounds)
    except (ValueError, OSError) as e:  # a source row (named in the message) or the disk
        print(f"{cli.error_text(e)}\nnothing written to {FLAGS.output_prefix}-*",
              file=sys.stderr)
        return 1
    print(f"wrote {summary.written} records in {len(summary.shards)} shards "
          f"({FLAGS.output_prefix}-*); skipped: {summary.duplicate_records} duplicate, "
          f"{summary.empty_records} without caption, {summary.bad_images} bad image, "
          f"{summary.too_large_images} image over {bounds.max_image_pixels} pixels, "
          f"{summary.unreadable_sources} missing/unreadable image file; dropped captions: "
          f"{summary.duplicate_captions} repeated, {summary.empty_captions} blank; "
          f"{summary.cut_captions} captions cut to {bounds.max_caption_bytes} bytes")
    return 0 if summary.written else 1


if __name__ == "__main__":
    cli.run(main)
