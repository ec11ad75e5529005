"""Peak memory and step time of the contrastive step: BASIC accumulation (M micro-batches) and recompute (remat), each against the plain step.

Each configuration runs in its own process (`steps.measure_step_memory`, under
common.MEMORY_ENV): build the model, AdamW and the input batch, trace and run one step, then
time `STEPS` more; memory is the peak RSS increase over the RSS just before the first step
(tracing included). The step is the benchmarks' train step (contrastive_gradients + AdamW) on one
device; the planner's prediction for each row is shown beside the measurement.
"""
from benchmarks import common

GIN = "models/tiny"
# A tiny-shaped model at a batch where activations dominate memory.
BINDINGS = []
BATCH = 256
STEPS = 3
CONFIGS = [
    {"micro": 1, "remat": "none"},
    {"micro": 4, "remat": "none"},
    {"micro": 16, "remat": "none"},
    {"micro": 1, "remat": "every_block"},
]


def measure(cfg: dict) -> dict:
    from benchmarks import steps
    return steps.measure_step_memory(cfg)


def run() -> dict:
    rows = []
    for c in CONFIGS:
        cfg = dict(c, gin=[GIN], bindings=BINDINGS, batch=BATCH, steps=STEPS)
        rows.append(common.run_child("benchmarks.memory_accumulation", cfg,
                                     env=common.MEMORY_ENV))
        r = rows[-1]
        print(f"  micro={c['micro']} remat={c['remat']}: +{r['measured_mb']} MB "
              f"(planner {r['predicted_mb']} MB), {r['step_s']} s/step", flush=True)
    base = rows[0]
    for r in rows:
        r["memory_vs_plain"] = round(r["measured_mb"] / base["measured_mb"], 3)
        r["time_vs_plain"] = round(r["step_s"] / base["step_s"], 3)
    return {"gin": GIN, "bindings": BINDINGS, "batch": BATCH, "env": common.MEMORY_ENV,
            "rows": rows}


def table(payload: dict) -> str:
    rows = [[r["micro"], r["remat"], r["measured_mb"], r["memory_vs_plain"], r["predicted_mb"],
             f"{r['error']:+.0%}", r["step_s"], r["time_vs_plain"]] for r in payload["rows"]]
    env = " ".join(f"{k}={v}" for k, v in payload["env"].items())
    return (f"Config `{payload['gin']}` + {payload['bindings']}, batch {payload['batch']}, "
            f"children run with `{env}`.\n\n" +
            common.markdown_table(["micro-batches", "remat", "peak RSS increase MB",
                                   "memory vs plain", "planner MB", "planner error", "step s",
                                   "time vs plain"], rows))


if __name__ == "__main__":
    common.child_main(measure)
