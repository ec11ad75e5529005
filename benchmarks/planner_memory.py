"""Planner check: predicted against measured peak memory of the train step, side by side.

Each configuration runs in its own process (`steps.measure_step_memory`, under
common.MEMORY_ENV): build the model, the AdamW and the input batch, then run the train step
(benchmarks/steps.py) twice; measured = peak RSS increase over the RSS just before the first step,
i.e. what the step adds on top of weights, optimizer state and inputs. The prediction is the
planner's `Plan.step_bytes` for the same setting (gradients, activations of one micro-batch,
workspace, embeddings, logits and its constant runtime overhead), computed in the same process
from the parsed gin config. The 'batch 2' row of each config shows the framework's own overhead
that the constant stands for. The memory_accumulation figure adds rows at several micro-batch
counts and with remat.
"""
from benchmarks import common

# (config, gin files, bindings, [(batch, micro-batches, remat mode)]).
CONFIGS = [
    ("tiny", ["models/tiny"], [], [(2, 1, "none"), (128, 1, "none"), (1024, 1, "none"),
                            (1024, 4, "none")]),
    # demo.gin trains at batch 128 with 2 micro-batches.
    ("demo", ["demo"], [], [(2, 1, "none"), (128, 2, "none"), (512, 1, "none"),
                            (512, 4, "none")]),
]
TOLERANCE = 0.25
STEPS = 0  # no timing: the memory of the first two steps is the measurement


def measure(cfg: dict) -> dict:
    from benchmarks import steps
    return dict(steps.measure_step_memory(cfg), config=cfg["config"])


def run() -> dict:
    """The children run two at a time: they measure memory only (STEPS = 0)."""
    rows, configs = [], []
    for name, gin_files, bindings, settings in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            rows.append(skipped)
            continue
        configs += [dict(config=name, gin=gin_files, bindings=bindings, batch=batch,
                         micro=micro, remat=remat, steps=STEPS)
                    for batch, micro, remat in settings]
    for r in common.run_children("benchmarks.planner_memory", configs, env=common.MEMORY_ENV):
        print(f"  {r['config']} batch {r['batch']} M={r['micro']} remat={r['remat']}: measured "
              f"{r['measured_mb']} MB, predicted {r['predicted_mb']} MB ({r['error']:+.0%})",
              flush=True)
        rows.append(r)
    return {"tolerance": TOLERANCE, "env": common.MEMORY_ENV, "rows": rows}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 7 + [f"skipped: {r['skipped']}"])
            continue
        c = r["predicted_components_mb"]
        within = abs(r["error"]) <= payload["tolerance"]
        rows.append([r["config"], r["batch"], r["micro"], r["remat"], r["measured_mb"],
                     r["predicted_mb"], f"{r['error']:+.0%}", "yes" if within else "**no**",
                     ", ".join(f"{k} {c[k]}" for k in ("activations", "workspace", "gradients",
                                                        "embeddings", "logits",
                                                        "runtime overhead"))])
    env = " ".join(f"{k}={v}" for k, v in payload.get("env", {}).items())
    return ((f"Children run with `{env}` (see benchmarks/common.py).\n\n" if env else "") +
            common.markdown_table(
                ["config", "batch", "micro-batches", "remat", "measured MB", "predicted MB",
                 "error", f"within {payload['tolerance']:.0%}", "predicted parts (MB)"], rows))


if __name__ == "__main__":
    common.child_main(measure)
