"""Where the training input pipeline's time goes: examples/s of a plain decode against
`make_dataset`, and of the pipeline built up stage by stage (issue 22 item 5).

    flock /tmp/basic_tf_heavy.lock timeout 900 \
        python3 -m benchmarks.pipeline_profile --format png --work /tmp/pipe_prof

Formats: png = the demo's records (Fashion-MNIST 28x28 PNG, image_size 28, area_range (1, 1),
flip, batch 128, seq_len 24, as gin/demo.gin); jpeg = 256 px synthetic JPEG shards
(basic_tf.data.throughput.write_synthetic_shards), image_size 224, default crops, batch 128.

"raw decode" is the rate to beat: read the shards (interleaved), parse each record and decode
its image (decode_image, AUTOTUNE), batch. Every figure is examples/s over `--examples`
examples after a warm-up of two batches, best of `--repeats`. Run it from the tree it should
import (python -m puts the working directory first on sys.path).

Measured 2026-12-07 (2 cores, load ~1.3-1.8 from other helpers' work; raw decode varies
10-15k/s between runs), examples/s make_dataset / raw decode:
  png  (demo):  before 1,907 / 11,591 (0.16); after 3,245 / 12,907 (0.25)
  jpeg (224):   before   766 /  3,698 (0.21); after   871 /  3,824 (0.23)
Stages of the old pipeline (png, cumulative, examples/s): TFRecord read 23,201; + per-record
map/scan of the shard reader 7,945; + shuffle 8,656; + enumerate/parse 7,656; + ignore_errors
6,436; + parse-drop scan 6,612; + decode map 2,774; + ignore_errors/accounting scan 1,685;
+ filter/map/batch 2,324; + tokenize 2,000.
"""
import argparse
import json
import os
import time

import tensorflow as tf

from basic_tf.data import pipeline, schema
from basic_tf.data.data_config import DataConfig

BATCH = 128


def _rate(ds, examples, repeats):
    """Best examples/s over `repeats` runs of `examples` examples (batches of BATCH)."""
    best = 0.0
    it = iter(ds.repeat())
    for _ in range(2):
        next(it)
    for _ in range(repeats):
        n = 0
        start = time.perf_counter()
        while n < examples:
            n += int(tf.nest.flatten(next(it))[0].shape[0])
        best = max(best, n / (time.perf_counter() - start))
    return best


def write_png(work, n):
    """n demo records (Fashion-MNIST train images, 3-channel PNG) + a tokenizer."""
    from basic_tf.data import fashion_mnist, sources, tokenizer, writer

    images, labels = fashion_mnist.load("train")
    prefix = os.path.join(work, "png")
    records = sources.from_arrays(images[:n], labels[:n], fashion_mnist.CLASS_NAMES)
    writer.write_tfrecords(records, prefix, check_images=False, show_progress=False)
    sp = tokenizer.train_sentencepiece(
        [f"a photo of a {c}" for c in fashion_mnist.CLASS_NAMES] * 20, prefix + "_spm", 60)
    return prefix + "-*.tfrecord", sp


def write_jpeg(work, n):
    from basic_tf.data import throughput
    out = throughput.write_synthetic_shards(os.path.join(work, "jpeg"), num_examples=n,
                                            image_size=256, num_shards=4)
    return out["file_pattern"], out["tokenizer_path"]


def raw_decode(pattern):
    files = schema.list_shards(pattern)
    ds = tf.data.Dataset.from_tensor_slices(files).repeat()
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=len(files),
                       num_parallel_calls=tf.data.AUTOTUNE)

    def decode(r):
        image = schema.parse_example(r)[schema.IMAGE_KEY]
        return tf.io.decode_image(image, channels=3, expand_animations=False)

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(
        tf.data.AUTOTUNE)


def make(pattern, sp, fmt, **kw):
    size = 28 if fmt == "png" else 224
    data = DataConfig(image_size=size, seq_len=24, tokenizer_path=sp)
    extra = dict(area_range=(1.0, 1.0)) if fmt == "png" else {}
    extra.update(kw)
    return pipeline.make_dataset(None, data, training=True, file_pattern=pattern,
                                 global_batch_size=BATCH, shuffle_buffer=10_000, seed=0,
                                 log_skipped=False, **extra)


def stages(pattern, sp, fmt):
    """(name, dataset of batches) for the old make_dataset cut after each stage (its own
    private functions; each prefix is mapped to a constant and batched so the rates compare)."""
    def batched(ds):
        return ds.map(lambda *e: tf.constant(0)).batch(BATCH)

    import functools
    from basic_tf.data import limits as limits_lib, skips
    files = schema.list_shards(pattern)
    expected, per_pass = pipeline._check_files(pattern, files)
    size = 28 if fmt == "png" else 224
    area = (1.0, 1.0) if fmt == "png" else (0.5, 1.0)
    from basic_tf.data.tokenizer import Tokenizer
    tok = Tokenizer(sp, 24)
    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(expected, tf.int64)))
    ds = ds.shuffle(len(files), seed=0).repeat()
    ds = ds.interleave(pipeline._read_shard, cycle_length=min(8, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    yield "files_interleave_only", batched(tf.data.Dataset.from_tensor_slices(files).repeat(
        ).interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    yield "read_shards(scan)", batched(ds)
    ds = ds.shuffle(10_000, seed=0)
    yield "+shuffle", batched(ds)
    ds = ds.enumerate()
    ds = ds.map(pipeline._parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    yield "+enumerate+parse", batched(ds)
    ds = ds.ignore_errors()
    yield "+ignore_errors", batched(ds)
    ds = ds.scan(tf.constant(0, tf.int64), pipeline._count_parse_drops)
    yield "+parse_drop_scan", batched(ds)
    decode = functools.partial(
        pipeline._decode, training=True, seed=0, image_size=size, area_range=area,
        aspect_ratio_range=(3 / 4, 4 / 3), random_flip=True, eval_crop_fraction=1.0,
        antialias=False, limits=limits_lib.input_limits())
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    yield "+decode", batched(ds)
    ds = ds.ignore_errors()
    state, account = skips.account(
        where=pattern, num_files=len(files), max_skipped_fraction=0.5,
        min_records_for_fraction=1000, stall_elements=10**9, end_kind=pipeline._END,
        record_kind=pipeline._RECORD, bad_kind=pipeline._BAD)
    ds = ds.scan(state, account)
    yield "+ignore_errors+account_scan", batched(ds)
    ds = ds.filter(lambda e: e["kind"] == pipeline._RECORD)
    ds = ds.map(lambda e: {k: v for k, v in e.items() if k != "kind"})
    ds = ds.batch(BATCH, drop_remainder=True)
    yield "+filter+map+batch", ds

    def tokenize(batch):
        batch = dict(batch)
        batch["token_ids"] = tok(batch.pop("caption"))
        return batch
    yield "+tokenize(=make_dataset)", ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--format", choices=["png", "jpeg"], default="png")
    p.add_argument("--work", default="/tmp/pipe_prof")
    p.add_argument("--records", type=int, default=0)
    p.add_argument("--examples", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stages", action="store_true",
                   help="also time the pipeline as of commit ae8f478 (before issue 22 item "
                   "5; run with that tree on PYTHONPATH) built up stage by stage")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    records = args.records or (20000 if args.format == "png" else 1000)
    examples = args.examples or (20000 if args.format == "png" else 2000)
    marker = os.path.join(args.work, f"{args.format}.json")
    if os.path.exists(marker):
        with open(marker) as f:
            pattern, sp = json.load(f)
    else:
        pattern, sp = (write_png if args.format == "png" else write_jpeg)(args.work, records)
        with open(marker, "w") as f:
            json.dump([pattern, sp], f)
    out = {"format": args.format, "load": os.getloadavg()}
    print(out, flush=True)
    out["raw_decode"] = _rate(raw_decode(pattern), examples, args.repeats)
    out["make_dataset"] = _rate(make(pattern, sp, args.format), examples, args.repeats)
    out["ratio"] = out["make_dataset"] / out["raw_decode"]
    print(out, flush=True)
    if args.stages:
        for name, ds in stages(pattern, sp, args.format):
            out[name] = _rate(ds, examples, args.repeats)
            print(name, out[name], flush=True)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
