"""Planner check: predicted against measured peak memory of the train step, side by side.

Each configuration runs in its own process: build the model, the AdamW and the input batch, then
run the train step (benchmarks/steps.py) twice; measured = peak RSS increase over the RSS just
before the first step, i.e. what the step adds on top of weights, optimizer state and inputs.
The prediction is the planner's `Plan.step_bytes` for the same config (gradients, activations of
one micro-batch, workspace, embeddings, logits and its constant runtime overhead), computed in
the same process from the parsed gin config. The 'batch 2' row of each config shows the
framework's own overhead that the constant stands for.
"""
from benchmarks import common

# (config, gin files, bindings, [(batch, micro-batches, remat mode)]).
CONFIGS = [
    ("tiny", ["tiny"], [], [(2, 1, "none"), (128, 1, "none"), (1024, 1, "none"),
                            (1024, 1, "every_block"), (1024, 4, "none")]),
    ("demo", ["demo"], [], [(2, 1, "none"), (64, 1, "none"), (256, 1, "none"),
                            (256, 4, "none")]),
]
TOLERANCE = 0.25


def measure(cfg: dict) -> dict:
    import tensorflow as tf
    from basic_tf import planner
    from benchmarks import steps

    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"],
                                        remat=cfg["remat"])
    step = steps.train_step(model, cfg["micro"])
    plan = planner.plan_step(planner.gin_model_config(), cfg["batch"],
                             num_micro_batches=cfg["micro"],
                             remat_every=0 if cfg["remat"] == "none" else 1)
    before = common.rss_mb()
    for i in range(2):
        float(step(images, tokens, tf.constant([i, 0])))
    measured = common.peak_rss_mb() - before
    predicted = plan.step_bytes / planner.MB
    return {**{k: cfg[k] for k in ("config", "batch", "micro", "remat")},
            "params": steps.param_count(model), "planner_params": plan.params["total"],
            "measured_mb": round(measured, 1), "predicted_mb": round(predicted, 1),
            "predicted_components_mb": {k: round(v / planner.MB, 2)
                                        for k, v in plan.memory.items()},
            "error": round(predicted / measured - 1.0, 3)}


def run() -> dict:
    from basic_tf.config import resolve_gin_file
    rows = []
    for name, gin_files, bindings, settings in CONFIGS:
        try:
            resolve_gin_file(gin_files[0])
        except FileNotFoundError:
            rows.append({"config": name, "skipped": f"gin file {gin_files[0]!r} not found"})
            continue
        for batch, micro, remat in settings:
            rows.append(common.run_child("benchmarks.planner_memory", dict(
                config=name, gin=gin_files, bindings=bindings, batch=batch, micro=micro,
                remat=remat)))
            r = rows[-1]
            print(f"  {name} batch {batch} M={micro} remat={remat}: measured "
                  f"{r['measured_mb']} MB, predicted {r['predicted_mb']} MB "
                  f"({r['error']:+.0%})", flush=True)
    return {"tolerance": TOLERANCE, "rows": rows}


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
                     f"activations {c['activations']}, workspace {c['workspace']}, "
                     f"logits {c['logits']}, overhead {c['runtime overhead']}"])
    return common.markdown_table(
        ["config", "batch", "micro-batches", "remat", "measured MB", "predicted MB", "error",
         f"within {payload['tolerance']:.0%}", "predicted parts (MB)"], rows)


if __name__ == "__main__":
    common.child_main(measure)
