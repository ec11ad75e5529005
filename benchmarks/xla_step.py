"""Compile seconds and step time of the trainer's whole step, train.jit_compile on and off.

gin/tiny.gin's model, batch and optimizer: 64 pairs in 2 micro-batches, AdamW.

The step is basic_tf/training/step.py's TrainStep as the Trainer calls it (accumulation,
clipping, the skipped-step guard and roll-back, the optimizer update, BatchNorm restore,
counters) on random batches of tiny.gin's shapes (no input pipeline). Modes: `plain`, `xla`
(the flat AdamW update of training/flat_update.py) and `xla_per_variable` (xla with Keras'
per-variable update, roll-back copies and conditionals of training/update.py: the step before
the flat update). One child process per mode: `first call s` is tracing + compilation + one
step; `compile s` is that minus a steady step (what a TPU run waits before its first step, on
this CPU); `step s` is the median of the timed steps. The issue's target: compile <= 10 s on 2
cores. The 1-minute load average at the start and end of each child says how much of the 2
cores other processes took.
"""
import os
import time

from benchmarks import common

GIN, BATCH, STEPS = ["tiny"], 64, 8
# tiny.gin's data paths are not needed (random batches); its model, M = 2 and AdamW are.
MODES = ("plain", "xla", "xla_per_variable")


def measure(cfg: dict) -> dict:
    import functools

    import numpy as np
    import tensorflow as tf
    from basic_tf import config, from_gin
    from basic_tf.training.contrastive import ContrastiveTask
    from basic_tf.training.placement import Placement
    from basic_tf.training.step import TrainState, TrainStep

    load_start = os.getloadavg()[0]
    if cfg["mode"] == "xla_per_variable":
        from basic_tf.training import flat_update
        flat_update.supports = lambda optimizer, variables: False
    config.parse(GIN, [])
    train = from_gin.train_config()
    model = from_gin.dual_encoder()
    rng = np.random.default_rng(0)
    size, seq = model.image_size, model.max_text_len
    batch = {"images": tf.constant(rng.uniform(size=(BATCH, size, size, 3)), tf.float32),
             "token_ids": tf.constant(rng.integers(1, 60, size=(BATCH, seq)), tf.int32)}
    model({"images": batch["images"][:2], "token_ids": batch["token_ids"][:2]})
    task = ContrastiveTask(model, num_micro_batches=train.num_micro_batches,
                           loss_kind=train.loss_kind)
    placement = Placement(optimizer_fn=functools.partial(from_gin.make_optimizer))
    optimizer = placement.place_task(task)
    state = TrainState()
    step = TrainStep(placement, task, optimizer, state, clip_norm=train.clip_norm,
                     loss_spike_factor=train.loss_spike_factor,
                     loss_spike_window=train.loss_spike_window, seed=train.seed,
                     jit_compile=cfg["mode"] != "plain")
    fn = tf.function(step, autograph=False)  # as the Trainer's loop calls it
    start = time.perf_counter()
    float(fn(batch)[0].loss)
    first = time.perf_counter() - start
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        float(fn(batch)[0].loss)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"mode": cfg["mode"], "batch": BATCH, "micro_batches": train.num_micro_batches,
            "first_call_s": round(first, 2), "compile_s": round(first - step_s, 2),
            "step_s": round(step_s, 4), "load_start": round(load_start, 2),
            "load_end": round(os.getloadavg()[0], 2)}


def run() -> dict:
    rows = []
    for mode in MODES:
        rows.append(common.run_child("benchmarks.xla_step", {"mode": mode}))
        r = rows[-1]
        print(f"  {mode}: compile {r['compile_s']} s, step {r['step_s']} s (load "
              f"{r['load_start']} -> {r['load_end']})", flush=True)
    return {"rows": rows}


def table(payload: dict) -> str:
    rows = [[r["mode"], r["batch"], r["micro_batches"], r["first_call_s"], r["compile_s"],
             r["step_s"], f"{r['load_start']} -> {r['load_end']}"] for r in payload["rows"]]
    return common.markdown_table(
        ["train.jit_compile", "batch", "micro-batches", "first call s", "compile s", "step s",
         "load average"], rows)


if __name__ == "__main__":
    common.child_main(measure)
