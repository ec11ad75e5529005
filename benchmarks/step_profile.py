"""Where the train step's time goes: TF profiler self time per op type, plain and XLA.

In one child process per (config, mode), the openclip_speed comparison's step (ViT towers, same
shapes, contrastive step + AdamW, TensorFlow's default threads) is warmed up, then `STEPS` steps
run under `tf.profiler.experimental` and the trace (XSpace protobuf) is read back: each traced
event's self time (its duration less its nested events' on the same thread), summed per op type
over all threads, per step. Plain `tf.function` steps trace one event per TensorFlow op
("name:Type"); XLA steps trace some of its CPU thunks (HLO names such as `dot.12`,
`reduce-window.5.clone`; the type is the name without its numbers), and the executable's own
event keeps the rest ("XLA (not broken down)": mostly its fused element-wise loops). Categories:
matmul (MatMul, BatchMatMul, Einsum, Conv, HLO dot), optimizer (ops under Keras AdamW's `adam_w/`
scope; inside XLA's fusions it cannot be told apart), elementwise (every other op: adds, layer
norm and GELU pieces, softmax, slices and their gradients, reductions), runtime (executor and
function-call events outside any op). The calling thread's wait for the function is left out.
`cores busy` is the summed self time over (step time x cores): the rest is idle cores, i.e.
per-op overhead and dependencies between ops.
"""
import collections
import os
import re
import tempfile
import time

from benchmarks import common, steps
from benchmarks.openclip_speed import COMPARISON_VIT, MID

CONFIGS = [("demo", ["demo"], COMPARISON_VIT["demo"], 128, 10),
           ("mid", ["models/tiny"], MID + COMPARISON_VIT["mid"], 64, 3)]
TOP = 8
MATMUL = re.compile(r"matmul|einsum|conv|^dot$", re.I)
HLO = re.compile(r"^[a-z][\w-]*(\.\d+)?(\.clone)?$")  # an XLA thunk: dot.6, loop_fusion.3.clone
WAITING = "KernelAndDeviceFunc::Run"  # the calling thread, blocked until the function returns


def op_type(name: str) -> str:
    """'tower/dense/MatMul:_MklMatMul' -> '_MklMatMul'; 'reduce-window.55.clone' ->
    'reduce-window'; runtime events keep their name."""
    if name.startswith("__inference"):
        return "XLA executable"
    if ":" in name and "::" not in name:
        return name.rsplit(":", 1)[1]
    return re.sub(r"(\.\d+)?(\.clone)?$", "", name) if HLO.match(name) else name


def category(name: str, kind: str) -> str:
    """matmul | elementwise | optimizer | XLA (not broken down) | runtime | waiting."""
    if name == WAITING:
        return "waiting"
    if name.startswith("__inference"):  # the XLA executable's own time outside traced thunks
        return "XLA (not broken down)"
    if "adam" in name.lower():  # Keras 3 AdamW's name scope, adam_w/
        return "optimizer"
    if (":" in name and "::" not in name) or (HLO.match(name) and "." in name):
        return "matmul" if MATMUL.search(kind) else "elementwise"
    return "runtime"


def self_times(xspace_path: str):
    """-> ({op type: self µs}, {category: self µs}) summed over every thread of the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    by_type, by_cat = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            events = sorted(((e.offset_ps, e.offset_ps + e.duration_ps,
                              plane.event_metadata[e.metadata_id].name) for e in line.events),
                            key=lambda e: (e[0], -e[1]))
            stack, own = [], []
            for start, end, name in events:
                while stack and stack[-1][1] <= start:
                    stack.pop()
                own.append([name, end - start])
                if stack:  # nested: the parent's self time loses it
                    own[stack[-1][2]][1] -= end - start
                stack.append((start, end, len(own) - 1))
            for name, ps in own:
                kind = op_type(name)
                by_type[kind] += ps / 1e6
                by_cat[category(name, kind)] += ps / 1e6
    return by_type, by_cat


def measure(cfg: dict) -> dict:
    import tensorflow as tf
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    step = steps.train_step(model, xla=cfg["xla"])
    for i in range(2):
        float(step(images, tokens, tf.constant([i, 0])))
    with tempfile.TemporaryDirectory(prefix="basic_tf_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for i in range(cfg["steps"]):
            float(step(images, tokens, tf.constant([i + 10, 0])))
        step_s = (time.perf_counter() - start) / cfg["steps"]
        tf.profiler.experimental.stop()
        paths = [os.path.join(d, f) for d, _, fs in os.walk(logdir) for f in fs
                 if f.endswith(".xplane.pb")]
        by_type, by_cat = self_times(paths[0])
    n = cfg["steps"]
    total = sum(v for k, v in by_cat.items() if k != "waiting")
    return {"config": cfg["name"], "mode": "xla" if cfg["xla"] else "plain",
            "batch": cfg["batch"], "step_ms": round(step_s * 1e3, 2),
            "busy": round(total / n / 1e3 / (step_s * 1e3 * os.cpu_count()), 3),
            "categories_ms": {k: round(v / n / 1e3, 2) for k, v in by_cat.most_common()},
            "top_ms": [[k, round(v / n / 1e3, 2)] for k, v in by_type.most_common(TOP + 1)],
            "op_types": len(by_type)}


def run() -> dict:
    rows = []
    for name, gin_files, bindings, batch, num_steps in CONFIGS:
        for xla in (False, True):
            rows.append(common.run_child("benchmarks.step_profile", dict(
                name=name, gin=gin_files, bindings=bindings, batch=batch, steps=num_steps,
                xla=xla)))
            r = rows[-1]
            print(f"  {name} {r['mode']}: {r['step_ms']} ms/step, {r['categories_ms']}, "
                  f"top {r['top_ms'][:4]}", flush=True)
    return {"rows": rows}


CATEGORIES = ("matmul", "elementwise", "optimizer", "XLA (not broken down)", "runtime")


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        cats = r["categories_ms"]
        total = sum(cats.get(c, 0.0) for c in CATEGORIES) or 1.0
        rows.append([r["config"], r["mode"], r["batch"], r["step_ms"], f"{r['busy']:.0%}"] + [
            f"{cats.get(c, 0.0)} ({cats.get(c, 0.0) / total:.0%})" for c in CATEGORIES] + [
            ", ".join(f"{k} {v}" for k, v in r["top_ms"] if k != WAITING)])
    return common.markdown_table(
        ["config", "mode", "batch", "step ms", "cores busy"] + [f"{c} ms" for c in CATEGORIES]
        + ["top op types, self ms per step"], rows)


if __name__ == "__main__":
    common.child_main(measure)
