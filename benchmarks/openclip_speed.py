"""Train-step pairs/s: basic_tf vs open_clip's CLIP with the same tower shapes, batch and AdamW.

Both sides run one full step per call: forward of both towers, symmetric softmax contrastive loss
with a learned temperature, backward, AdamW update (lr 1e-3, weight decay 0.1, eps 1e-7, no
clipping), on random images and token ids (no input pipeline), each in its own process, on all
cores. Ours is `contrastive_gradients` + Keras 3 AdamW in one `tf.function` (with and without XLA);
open_clip's is `CLIP` + `ClipLoss` + `torch.optim.AdamW` in eager PyTorch 2.13 (CPU build, from
the venv made by benchmarks/setup_openclip.sh). Each side gets its better thread setting: ours
runs with one inter-op thread (common.SPEED_ENV), open_clip with the faster of all cores and one.

Same shapes: open_clip has no CoAtNet tower, so the comparison swaps our config's image tower for
a ViT (`COMPARISON_VIT` bindings) and gives open_clip exactly the shapes our child reports back
(patch size, widths, depths, heads, MLP widths, vocabulary, sequence length, embedding size).
Known differences: open_clip's ViT always prepends a class token (one more token than ours with
'gap' pooling), its text tower has no padding mask (ours builds one; the inputs have no padding)
and pools at the argmax token (ours: last non-padding token). Our configs as shipped (CoAtNet
tower) are timed by the mfu figure. Each side is measured `repeats` times, interleaved, and the
faster run is kept, because other processes share the 2 cores; XLA (whose compilation takes
one to two minutes here) is timed in the first repeat only, and only for the configs marked so.
"""
import json
import os
import subprocess

from benchmarks import common, steps

# The demo row runs once gin/demo.gin exists.
# "mid" is a compute-bound shape (feasibility.md section 8: 64px ViT/8 and a text tower, 4 x 256
# each, 8.6M parameters), where matmul speed rather than per-op overhead decides.
MID = ["dual_encoder_config.image_size = 64", "dual_encoder_config.embed_dim = 256",
       "text_tower_config.vocab_size = 8000", "text_tower_config.max_len = 32",
       "text_tower_config.width = 256", "text_tower_config.depth = 4",
       "text_tower_config.num_heads = 4", "text_tower_config.mlp_dim = 1024"]
# (config name, gin files, extra bindings, batch, timed steps, repeats, time XLA too).
# XLA is timed where it pays: at the tiny shapes it compiled for 77-118 s and ran 3-4x slower
# than plain tf.function (2026-11-28/29), at 'mid' it is our fastest step.
CONFIGS = [
    ("tiny", ["models/tiny"], [], 128, 8, 2, False),
    ("mid", ["models/tiny"], MID, 64, 3, 1, True),
    ("demo", ["demo"], [], 128, 5, 2, False),
]
# Our image tower as a ViT for the like-for-like comparison (models/tiny.gin's ViT variant).
COMPARISON_VIT = {
    "tiny": ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 8",
             "vit_config.width = 64", "vit_config.depth = 2", "vit_config.num_heads = 2",
             "vit_config.pooling = 'gap'"],
    "mid": ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 8",
            "vit_config.width = 256", "vit_config.depth = 4", "vit_config.num_heads = 4",
            "vit_config.pooling = 'gap'"],
    # demo.gin: 28px images; patch 7 gives the 4x4 tokens of its CoAtNet's attention stage.
    "demo": ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 7",
             "vit_config.width = 64", "vit_config.depth = 2", "vit_config.num_heads = 2",
             "vit_config.pooling = 'gap'"],
}
OPTIMIZER = {"lr": steps.ADAMW["learning_rate"], "weight_decay": steps.ADAMW["weight_decay"],
             "eps": steps.ADAMW["epsilon"]}
WARMUP = 1
SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup_openclip.sh")


def measure(cfg: dict) -> dict:
    """Our side (child process): builds the model from gin and times the train step as a
    `tf.function`, then (same model, continuing) with `jit_compile=True` if cfg["xla"]."""
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    before = common.rss_mb()
    out = {"params": steps.param_count(model), "threads": os.cpu_count(),
           "shapes": shape_spec(model, cfg["batch"])}
    for name, xla in (("plain", False), ("xla", True))[:2 if cfg["xla"] else 1]:
        step = steps.train_step(model, xla=xla)
        out[name] = steps.time_step(step, images, tokens, cfg["warmup"], cfg["steps"])
    out["peak_increase_mb"] = round(common.peak_rss_mb() - before, 1)
    return out


def shape_spec(model, batch: int) -> dict:
    """The shapes open_clip is built with, read off our built model (ViT image tower only)."""
    t = model.text_tower.config
    spec = {"image_size": model.image_size, "embed_dim": model.embed_dim, "batch": batch,
            "vocab_size": t.vocab_size, "context_length": model.max_text_len,
            "text_width": t.width, "text_layers": t.depth, "text_heads": t.num_heads,
            "text_mlp": t.mlp_dim}
    v = model.image_tower.config
    if hasattr(v, "patch_size"):
        spec.update(patch_size=v.patch_size, vision_width=v.width, vision_layers=v.depth,
                    vision_heads=v.num_heads, vision_mlp=v.mlp_dim)
    return spec


def _openclip_python() -> str:
    proc = subprocess.run(["bash", SETUP], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"{SETUP} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _run_openclip(python: str, spec: dict) -> dict:
    """common.run_child for the torch venv's python (which must not be this process's)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([python, "-m", "benchmarks.openclip_step", "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=900, cwd=repo)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"open_clip child {spec} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run() -> dict:
    python = _openclip_python()
    out = []
    for name, gin_files, bindings, batch, num_steps, repeats, xla in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            out.append(skipped)
            continue
        base = dict(gin=gin_files, bindings=bindings + COMPARISON_VIT[name], batch=batch,
                    steps=num_steps, warmup=WARMUP)
        ours, theirs = [], []
        for repeat in range(repeats):  # interleaved, so drifting load hits both sides alike
            ours.append(common.run_child("benchmarks.openclip_speed",
                                         dict(base, xla=xla and repeat == 0),
                                         env=common.SPEED_ENV))
            spec = dict(ours[0]["shapes"], steps=num_steps, warmup=WARMUP, **OPTIMIZER)
            theirs.append(_run_openclip(python, spec))
            print(f"  {name} run {repeat + 1}/{repeats}: ours {ours[-1]['plain']['pairs_per_s']}"
                  f" pairs/s, open_clip {theirs[-1]['pairs_per_s']} pairs/s", flush=True)
        row = {"config": name, "batch": batch, "steps": num_steps, "shapes": spec,
               "params": ours[0]["params"], "open_clip_params": theirs[0]["params"],
               "ours": min((r["plain"] for r in ours), key=lambda r: r["step_s"]),
               "ours_xla": ours[0].get("xla"),
               "open_clip": min(theirs, key=lambda r: r["step_s"]),
               "all_runs": {"ours": ours, "open_clip": theirs}}
        best_open_clip = row["open_clip"]["pairs_per_s"]
        row["ratio"] = round(row["ours"]["pairs_per_s"] / best_open_clip, 2)
        if xla:
            row["ratio_xla"] = round(row["ours_xla"]["pairs_per_s"] / best_open_clip, 2)
        print(f"  {name}: ours {row['ours']['pairs_per_s']} (XLA "
              f"{(row['ours_xla'] or {}).get('pairs_per_s', '-')}) vs open_clip "
              f"{best_open_clip} pairs/s", flush=True)
        out.append(row)
    return {"optimizer": OPTIMIZER, "rows": out}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"], "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        s = r["shapes"]
        shape = (f"ViT {s['image_size']}px/{s['patch_size']} w{s['vision_width']} "
                 f"d{s['vision_layers']}, text w{s['text_width']} d{s['text_layers']} "
                 f"L{s['context_length']}")
        xla = r.get("ours_xla") or {}
        rows.append([r["config"], r["batch"], r["ours"]["pairs_per_s"],
                     xla.get("pairs_per_s", "-"), r["open_clip"]["pairs_per_s"],
                     f"{r['ratio']} / {r.get('ratio_xla', '-')}",
                     f"{shape}; {r['params']:,} params (open_clip {r['open_clip_params']:,})"])
    return common.markdown_table(
        ["config", "batch", "ours pairs/s", "ours XLA pairs/s", "open_clip pairs/s",
         "ratio (plain / XLA)", "shapes"], rows)


if __name__ == "__main__":
    common.child_main(measure)
