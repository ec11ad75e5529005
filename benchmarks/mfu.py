"""Model FLOPs utilisation: model FLOP/s of our train step over this machine's dense-matmul FLOP/s.

In each child process, first the machine's dense float32 matmul rate is measured with TensorFlow
(square matmuls in a `tf.function`, all cores, best of several sizes), then the train step of the
config as shipped (benchmarks/steps.py: contrastive step + AdamW, one micro-batch, no remat) is
timed, plain and compiled (`jit_compile=True`, XLA). Model FLOPs per step come from the planner
(basic_tf.planner: 3 x forward FLOPs of both towers + the logits, multiply-add = 2). Each config
runs under every common.TF_THREADS setting; plain and XLA keep their fastest setting (named in
the table), and the matmul peak is the best rate of any child of the run, so a one-thread setting
cannot inflate its own MFU. MFU = (model FLOPs / step time) / matmul FLOP/s. 'mid' is
openclip_speed's compute-bound shape with the shipped CoAtNet image tower.
"""
import time

from benchmarks import common
from benchmarks.openclip_speed import MID

# (name, gin files, bindings, batch, timed steps)
CONFIGS = [("tiny", ["models/tiny"], [], 128, 10), ("demo", ["demo"], [], 128, 10),
           ("mid", ["models/tiny"], MID, 64, 4)]
MATMUL_SIZES = (512, 1024, 2048)
WARMUP = 1


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
    from basic_tf import from_gin, planner
    from benchmarks import steps

    rates = matmul_flops_per_s()
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    plan = planner.plan_step(from_gin.model_configs(), cfg["batch"])
    out = {"config": cfg["name"], "batch": cfg["batch"],
           "matmul_flops_per_s": {str(k): round(v) for k, v in rates.items()},
           "model_flops_per_step": plan.model_flops,
           "forward_flops_per_example": plan.flops_per_example,
           "params": steps.param_count(model), "planner_params": plan.params["total"]}
    for name, xla in (("plain", False), ("xla", True)):
        out[name] = steps.time_step(steps.train_step(model, xla=xla), images, tokens,
                                    cfg["warmup"], cfg["steps"])
    return out


def run() -> dict:
    rows, children = [], []
    for name, gin_files, bindings, batch, num_steps in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            rows.append(skipped)
            continue
        by_threads = common.run_child_per_threads("benchmarks.mfu", dict(
            name=name, gin=gin_files, bindings=bindings, batch=batch, steps=num_steps,
            warmup=WARMUP))
        children += by_threads.values()
        row = {k: by_threads["default"][k] for k in (
            "config", "batch", "model_flops_per_step", "forward_flops_per_example", "params",
            "planner_params")}
        row.update(plain=common.fastest(by_threads, "plain"), xla=common.fastest(by_threads, "xla"),
                   by_threads=by_threads)
        rows.append(row)
        print(f"  {name}: step s plain {row['plain']['step_s']} ({row['plain']['threads']}), "
              f"XLA {row['xla']['step_s']} ({row['xla']['threads']})", flush=True)
    peak = max(max(c["matmul_flops_per_s"].values()) for c in children)
    for row in rows:
        for mode in ("plain", "xla") if "skipped" not in row else ():
            achieved = row["model_flops_per_step"] / row[mode]["step_s"]
            row[mode].update(model_flops_per_s=round(achieved), mfu=round(achieved / peak, 4))
            print(f"  {row['config']} {mode}: {achieved / 1e9:.2f} GFLOP/s of {peak / 1e9:.1f} "
                  f"GFLOP/s matmul: MFU {achieved / peak:.1%}", flush=True)
    return {"peak_flops_per_s": round(peak), "thread_settings": common.TF_THREADS, "rows": rows}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 7 + [f"skipped: {r['skipped']}"])
            continue
        p, x = r["plain"], r["xla"]
        rows.append([r["config"], r["batch"], f"{r['model_flops_per_step'] / 1e9:.2f}",
                     f"{p['step_s']} ({p['threads']})", f"{x['step_s']} ({x['threads']})",
                     x["first_step_s"], f"{p['model_flops_per_s'] / 1e9:.2f} / "
                     f"{x['model_flops_per_s'] / 1e9:.2f}", f"{p['mfu']:.1%} / {x['mfu']:.1%}",
                     f"{r['params']:,} params (planner {r['planner_params']:,})"])
    return common.markdown_table(
        ["config", "batch", "model GFLOP/step", "step s plain (threads)",
         "step s XLA (threads)", "XLA compile s", "model GFLOP/s plain / XLA",
         "MFU plain / XLA", "notes"], rows) + (
        f"\n\nMatmul peak: {payload['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (float32, best of "
        f"{', '.join(map(str, MATMUL_SIZES))}-square matmuls over every child of the run).")


if __name__ == "__main__":
    common.child_main(measure)
