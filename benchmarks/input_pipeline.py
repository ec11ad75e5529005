"""Input pipeline examples/s against the train step's demand (examples/s) for the same config.

In one child process per config: write synthetic JPEG shards (256x256, two captions each) and a
SentencePiece model (`basic_tf.data.throughput.write_synthetic_shards`), time the training
pipeline `make_dataset` (decode, random crop to the config's image size, flip, tokenise,
batch) with `measure_throughput`, then time the config's train step (benchmarks/steps.py) at
the same batch (BASIC-S: batch 4, see CONFIGS). Ratio = pipeline examples/s / step examples/s:
above 1 the pipeline is not the bottleneck. Both are measured alone on all cores; in training
they share them (tf.data runs while the step computes), so a ratio near 1 would not be enough.
"""
import os
import shutil
import tempfile

from benchmarks import common

# (name, gin files, bindings, batch of the pipeline, batch of the step, timed steps).
# BASIC-S (CoAtNet-0 at 224x224, 64 tokens): its CPU step takes seconds per example, so it is
# timed once at batch 4 (after the tracing call); examples/s hardly depend on the batch there.
CONFIGS = [("tiny", ["models/tiny"], [], 128, 128, 5), ("demo", ["demo"], [], 128, 128, 5),
           ("basic_s", ["models/basic_s"], [], 64, 4, 1)]
EXAMPLES, SOURCE_SIZE = 512, 256
PIPELINE_BATCHES = 30


def measure(cfg: dict) -> dict:
    from basic_tf import config
    from basic_tf.data import throughput
    from benchmarks import steps

    work = tempfile.mkdtemp(prefix="bench_pipeline_", dir=cfg["tmp"])
    try:
        config.parse(cfg["gin"], cfg["bindings"])
        from basic_tf import from_gin, from_gin_data
        model = from_gin.dual_encoder()  # for the config's image size and sequence length only
        image_size, seq_len = model.image_size, model.max_text_len
        del model
        shards = throughput.write_synthetic_shards(os.path.join(work, "shard"), EXAMPLES,
                                                   SOURCE_SIZE, num_shards=4, vocab_size=100)
        data = from_gin_data.data_config(image_size=image_size, seq_len=seq_len,
                                         tokenizer_path=shards["tokenizer_path"])
        pipe = throughput.measure_throughput(
            data, num_batches=cfg["pipeline_batches"], warmup_batches=3,
            make_dataset=from_gin_data.make_dataset_for,
            file_pattern=shards["file_pattern"], global_batch_size=cfg["pipeline_batch"],
            shuffle_buffer=EXAMPLES, log_skipped=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["step_batch"])
    timing = steps.time_step(steps.train_step(model), images, tokens, min(2, cfg["steps"] - 1),
                             cfg["steps"])
    return {"config": cfg["name"], "batch": cfg["pipeline_batch"],
            "step_batch": cfg["step_batch"], "image_size": image_size,
            "seq_len": seq_len, "pipeline_examples_per_s": round(pipe["examples_per_sec"], 1),
            "pipeline_skipped": pipe["skipped"], "step_examples_per_s": timing["pairs_per_s"],
            "step_s": timing["step_s"],
            "ratio": round(pipe["examples_per_sec"] / timing["pairs_per_s"], 2)}


def run() -> dict:
    tmp = os.path.join(common.RESULTS_DIR, "tmp")
    os.makedirs(tmp, exist_ok=True)
    rows = []
    for name, gin_files, bindings, pipeline_batch, step_batch, num_steps in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            rows.append(skipped)
            continue
        rows.append(common.run_child("benchmarks.input_pipeline", dict(
            name=name, gin=gin_files, bindings=bindings, pipeline_batch=pipeline_batch,
            step_batch=step_batch, tmp=tmp, pipeline_batches=PIPELINE_BATCHES, steps=num_steps)))
        r = rows[-1]
        print(f"  {name}: pipeline {r['pipeline_examples_per_s']} ex/s, step "
              f"{r['step_examples_per_s']} ex/s (x{r['ratio']})", flush=True)
    return {"source_image_size": SOURCE_SIZE, "rows": rows}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 5 + [f"skipped: {r['skipped']}"])
            continue
        batch = r["batch"] if r["step_batch"] == r["batch"] else \
            f"{r['batch']} (step {r['step_batch']})"
        rows.append([r["config"], batch, f"{r['image_size']}px, {r['seq_len']} tokens",
                     r["pipeline_examples_per_s"], r["step_examples_per_s"], f"{r['ratio']}x",
                     f"{r['pipeline_skipped']} records skipped"])
    return (f"Synthetic {payload['source_image_size']}x{payload['source_image_size']} JPEG "
            "shards, random crop + flip + tokenisation.\n\n" + common.markdown_table(
                ["config", "batch", "output", "pipeline ex/s", "train step ex/s",
                 "pipeline / step", "notes"], rows))


if __name__ == "__main__":
    common.child_main(measure)
