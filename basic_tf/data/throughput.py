"""Input pipeline speed: examples/s of `make_dataset` for a config, and synthetic JPEG shards.

For the benchmarks (issue 3: "the pipeline must not be the bottleneck"): compare
`measure_throughput(...)["examples_per_sec"]` with the train step's examples/s.
"""
import time
from typing import Optional

import numpy as np

from basic_tf.data import pipeline, schema, sources, tokenizer, writer
from basic_tf.data.data_config import DataConfig


def write_synthetic_shards(output_prefix: str, num_examples: int = 512, image_size: int = 256,
                           num_shards: int = 4, jpeg_quality: int = 90, vocab_size: int = 200,
                           seed: int = 0) -> dict:
    """Smooth random JPEGs (image_size^2) with 2 captions each, plus a tokenizer trained on them.

    Returns {"file_pattern": ..., "tokenizer_path": ...}: make_dataset's file_pattern and
    DataConfig's tokenizer_path.
    """
    rng = np.random.default_rng(seed)
    words = ["red", "small", "dog", "car", "tree", "blue", "house", "on", "a", "the", "near",
             "photo", "of", "old", "green", "boat", "river", "big", "cat", "sky"]
    per_shard = -(-num_examples // num_shards)
    captions_all = []

    def records():
        for i in range(num_examples):
            low = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
            image = np.kron(low, np.ones((image_size // 8 + 1, image_size // 8 + 1, 1),
                                         np.uint8))[:image_size, :image_size]
            caps = [" ".join(rng.choice(words, 8)) for _ in range(2)]
            captions_all.extend(caps)
            yield schema.Record(sources.encode_image(image, "jpeg", jpeg_quality), caps,
                                f"synthetic/{i:08d}")

    gen = records()
    for k in range(num_shards):
        chunk = [r for _, r in zip(range(per_shard), gen)]
        if chunk:
            writer.write_tfrecords(chunk, f"{output_prefix}{k:03d}", show_progress=False,
                                   check_images=False)
    sp = tokenizer.train_sentencepiece(captions_all, output_prefix + "_spm", vocab_size)
    return {"file_pattern": output_prefix + "*.tfrecord", "tokenizer_path": sp}


def measure_throughput(data: DataConfig, num_batches: int = 50, warmup_batches: int = 5,
                       training: bool = True, input_context=None, make_dataset=None,
                       **make_dataset_kwargs) -> dict:
    """Iterates `make_dataset(input_context, data, **make_dataset_kwargs)` (default:
    basic_tf.data.pipeline's; the benchmark passes basic_tf.from_gin_data.make_dataset_for,
    which adds the config's other bindings) and times it on this host.

    Returns examples_per_sec, batches_per_sec, batch_size, seconds (after warm-up), and
    skipped (records the pipeline skipped while measured).
    """
    make_dataset = make_dataset or pipeline.make_dataset
    ds = make_dataset(input_context, data, training=training, **make_dataset_kwargs)
    it = iter(ds)
    batch_size: Optional[int] = None
    for _ in range(warmup_batches):
        batch_size = int(next(it)["images"].shape[0])
    skipped = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
        batch_size = int(batch["images"].shape[0])
        skipped += int(batch["skipped"].numpy().sum())
    seconds = time.perf_counter() - start
    return {"examples_per_sec": num_batches * batch_size / seconds,
            "batches_per_sec": num_batches / seconds, "batch_size": batch_size,
            "seconds": seconds, "skipped": skipped}
