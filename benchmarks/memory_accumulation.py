"""Peak memory and step time of the contrastive step: BASIC accumulation (M micro-batches) and recompute (remat), each against the plain step.

Each configuration runs in its own process: build the model, trace and run one step, then time
`STEPS` more; memory is the peak RSS increase over the RSS just before the first step (which
includes tracing). The gradient step is `contrastive_gradients` (no optimizer), on one device.
"""
import time

from benchmarks import common

GIN = "tiny"
# A tiny-shaped model at a batch and resolution where activations dominate memory.
BINDINGS = []
BATCH = 256
STEPS = 3
CONFIGS = [
    {"micro": 1, "remat": "none"},
    {"micro": 4, "remat": "none"},
    {"micro": 16, "remat": "none"},
    {"micro": 1, "remat": "every_block"},
    {"micro": 4, "remat": "every_block"},
]


def measure(cfg: dict) -> dict:
    import numpy as np
    import tensorflow as tf
    from basic_tf import config
    from basic_tf.models import DualEncoder
    from basic_tf.parallel.remat import RematPolicy
    from basic_tf.training.accumulation import contrastive_gradients

    config.parse([cfg["gin"]], cfg["bindings"])
    model = DualEncoder(remat_policy=RematPolicy(mode=cfg["remat"]))
    rng = np.random.default_rng(0)
    size = model.image_size
    images = tf.constant(rng.uniform(size=(cfg["batch"], size, size, 3)).astype(np.float32))
    tokens = tf.constant(rng.integers(1, 100, size=(cfg["batch"], model.max_text_len)),
                         tf.int32)
    model({"images": images[:2], "token_ids": tokens[:2]})

    @tf.function
    def step(seed):
        loss, grads = contrastive_gradients(model, images, tokens, cfg["micro"], seed=seed)
        return loss, tf.linalg.global_norm(grads)

    before = common.rss_mb()
    start = time.perf_counter()
    step(tf.constant([0, 0])).__repr__()
    first = time.perf_counter() - start
    times = []
    for i in range(cfg["steps"]):
        start = time.perf_counter()
        loss, norm = step(tf.constant([i + 1, 0]))
        float(norm)
        times.append(time.perf_counter() - start)
    return {**cfg, "rss_before_mb": round(before, 1),
            "peak_increase_mb": round(common.peak_rss_mb() - before, 1),
            "first_step_s": round(first, 2), "step_s": round(float(np.median(times)), 3),
            "loss": float(loss)}


def run() -> dict:
    rows = []
    for c in CONFIGS:
        cfg = dict(c, gin=GIN, bindings=BINDINGS, batch=BATCH, steps=STEPS)
        rows.append(common.run_child("benchmarks.memory_accumulation", cfg))
        print(f"  micro={c['micro']} remat={c['remat']}: +{rows[-1]['peak_increase_mb']} MB, "
              f"{rows[-1]['step_s']} s/step", flush=True)
    base = rows[0]
    for r in rows:
        r["memory_vs_plain"] = round(r["peak_increase_mb"] / base["peak_increase_mb"], 3)
        r["time_vs_plain"] = round(r["step_s"] / base["step_s"], 3)
    return {"gin": GIN, "bindings": BINDINGS, "batch": BATCH, "rows": rows}


def table(payload: dict) -> str:
    rows = [[r["micro"], r["remat"], r["peak_increase_mb"], r["memory_vs_plain"], r["step_s"],
             r["time_vs_plain"], f"{r['loss']:.6f}"] for r in payload["rows"]]
    return (f"Config `{payload['gin']}` + {payload['bindings']}, batch {payload['batch']}.\n\n" +
            common.markdown_table(["micro-batches", "remat", "peak RSS increase MB",
                                   "memory vs plain", "step s", "time vs plain", "loss"], rows))


if __name__ == "__main__":
    common.child_main(measure)
