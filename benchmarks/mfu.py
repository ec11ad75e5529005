"""Model FLOPs utilisation: model FLOP/s of our train step over this machine's dense-matmul FLOP/s.

In each child process, first the machine's dense float32 matmul rate is measured with TensorFlow
(square matmuls in a `tf.function`, all cores, best of several sizes), then the train step of the
config as shipped (benchmarks/steps.py: contrastive step + AdamW, one micro-batch, no remat) is
timed. Model FLOPs per step come from the planner (basic_tf.planner: 3 x forward FLOPs of both
towers + the logits, multiply-add = 2). MFU = (model FLOPs / step time) / matmul FLOP/s; both
rates are measured in the same process minutes apart, so shared-machine load hits both. The child
runs with common.SPEED_ENV (one inter-op thread), as the open_clip comparison does.
"""
import os
import time

from benchmarks import common

CONFIGS = [("tiny", ["models/tiny"], [], 128), ("demo", ["demo"], [], 128)]
MATMUL_SIZES = (512, 1024, 2048)
STEPS, WARMUP = 5, 2


def matmul_flops_per_s(sizes=MATMUL_SIZES, repeats: int = 5) -> dict:
    """Best float32 dense matmul rate (FLOP/s) of TensorFlow here, per size."""
    import numpy as np
    import tensorflow as tf

    rates = {}
    for n in sizes:
        a = tf.constant(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
        matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
        float(matmul(a, a))
        inner = max(1, int(2e9 / (2 * n ** 3)))  # about 2 GFLOP per timing
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                out = matmul(a, a)
            float(out)
            best = min(best, (time.perf_counter() - start) / inner)
        rates[n] = 2 * n ** 3 / best
    return rates


def measure(cfg: dict) -> dict:
    from basic_tf import planner
    from benchmarks import steps

    rates = matmul_flops_per_s()
    peak = max(rates.values())
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    plan = planner.plan_step(planner.gin_model_config(), cfg["batch"])
    timing = steps.time_step(steps.train_step(model), images, tokens, cfg["warmup"], cfg["steps"])
    achieved = plan.model_flops / timing["step_s"]
    return {"config": cfg["name"], "batch": cfg["batch"], "threads": os.cpu_count(),
            "matmul_flops_per_s": {str(k): round(v) for k, v in rates.items()},
            "peak_flops_per_s": round(peak), "model_flops_per_step": plan.model_flops,
            "forward_flops_per_example": plan.flops_per_example,
            "params": steps.param_count(model), "planner_params": plan.params["total"],
            **timing, "model_flops_per_s": round(achieved), "mfu": round(achieved / peak, 4)}


def run() -> dict:
    return {"rows": common.run_config_children(
        "benchmarks.mfu", CONFIGS,
        lambda r: f"{r['model_flops_per_s'] / 1e9:.2f} GFLOP/s of "
                  f"{r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s matmul: MFU {r['mfu']:.1%}",
        steps=STEPS, warmup=WARMUP)}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 6 + [f"skipped: {r['skipped']}"])
            continue
        rows.append([r["config"], r["batch"], f"{r['model_flops_per_step'] / 1e9:.2f}",
                     r["step_s"], f"{r['model_flops_per_s'] / 1e9:.2f}",
                     f"{r['peak_flops_per_s'] / 1e9:.1f}", f"{r['mfu']:.1%}",
                     f"{r['params']:,} params (planner {r['planner_params']:,})"])
    return common.markdown_table(
        ["config", "batch", "model GFLOP/step", "step s", "model GFLOP/s",
         "matmul GFLOP/s (peak)", "MFU", "notes"], rows)


if __name__ == "__main__":
    common.child_main(measure)
