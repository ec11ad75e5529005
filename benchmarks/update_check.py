"""Update check: the cost of refusing updates that leave a weight or optimizer slot non-finite.

basic_tf/training/update.py applies each step's update, checks every weight and slot, and rolls
back from copies when one is not finite (a finite loss at an absurd learning rate can overflow
them). The alternative, checking before applying, needs each optimizer's rule written twice. In
one child process per config the train step (contrastive step + clipping + AdamW through
apply_update, as the trainer runs it) is timed with the check and without it (update.py's
`_apply` alone), in alternating rounds; the ratio is the check's cost. TensorFlow's default threads.
"""
import time

from benchmarks import common

CONFIGS = [("tiny", ["models/tiny"], [], 128), ("demo", ["demo"], [], 128)]
ROUNDS, STEPS = 4, 5


def measure(cfg: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf
    from basic_tf.training import update
    from basic_tf.training import contrastive_gradients
    from benchmarks import steps

    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    variables = model.trainable_variables
    opt = keras.optimizers.AdamW(**steps.ADAMW)
    opt.build(variables)
    checked = update._apply_checked

    def unchecked(strategy, optimizer, variables, grads):
        update._apply(strategy, optimizer, variables, grads)
        return tf.constant(True)

    def make(check):
        def step(images, tokens, seed):
            update._apply_checked = checked if check else unchecked
            loss, grads = contrastive_gradients(model, images, tokens, 1, seed=seed)
            result = update.apply_update(opt, variables, loss, grads, clip_norm=1.0)
            update._apply_checked = checked
            return result.loss
        return tf.function(step)

    fns = {"checked": make(True), "unchecked": make(False)}
    for fn in fns.values():  # trace + warm up
        for i in range(2):
            float(fn(images, tokens, tf.constant([i, 0])))
    times = {name: [] for name in fns}
    for r in range(ROUNDS):
        for name, fn in fns.items():
            for i in range(STEPS):
                start = time.perf_counter()
                float(fn(images, tokens, tf.constant([100 * r + i, 0])))
                times[name].append(time.perf_counter() - start)
    med = {name: float(np.median(t)) for name, t in times.items()}
    slots = update.optimizer_slots(opt)
    return {"config": cfg["name"], "batch": cfg["batch"],
            "weights": int(sum(np.prod(v.shape) for v in variables)),
            "slot_values": int(sum(np.prod(v.shape) for v in slots)),
            "checked_step_s": round(med["checked"], 4),
            "unchecked_step_s": round(med["unchecked"], 4),
            "ratio": round(med["checked"] / med["unchecked"], 3)}


def run() -> dict:
    return {"rows": common.run_config_children(
        "benchmarks.update_check", CONFIGS,
        lambda r: f"checked {r['checked_step_s']} s, unchecked {r['unchecked_step_s']} s per "
                  f"step: {r['ratio']}x")}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 5 + [f"skipped: {r['skipped']}"])
            continue
        rows.append([r["config"], r["batch"], f"{r['weights']:,} + {r['slot_values']:,}",
                     r["unchecked_step_s"], r["checked_step_s"], f"{r['ratio']:.3f}x", ""])
    return common.markdown_table(
        ["config", "batch", "weights + slot values", "step s, no check", "step s, checked",
         "ratio", "notes"], rows)


if __name__ == "__main__":
    common.child_main(measure)
