"""Train-step pairs/s: basic_tf vs open_clip's CLIP with the same tower shapes, batch and AdamW.

Both sides run one full step per call: forward of both towers, symmetric softmax contrastive loss
with a learned temperature, backward, AdamW update (lr 1e-3, weight decay 0.1, eps 1e-7, no
clipping), on random images and token ids (no input pipeline), each in its own process, on all
cores. Ours is `contrastive_gradients` + Keras 3 AdamW in one `tf.function`, plain and compiled
(`jit_compile=True`, XLA); open_clip's is `CLIP` + `ClipLoss` + `torch.optim.AdamW` in eager
PyTorch 2.13 (CPU build, from the venv made by benchmarks/setup_openclip.sh). Each side gets the
best of a stated set of thread settings measured in the same run: ours under every
common.TF_THREADS setting (TensorFlow's default, one inter-op thread, one intra-op thread; plain
and XLA pick their own best), open_clip with all cores and with one. The table names the winners;
the JSON keeps every setting's figure. The XLA first call (trace + compile + one step) is reported
as its compile seconds.

Same shapes: open_clip has no CoAtNet tower, so the comparison swaps our config's image tower for
a ViT (`COMPARISON_VIT` bindings) and gives open_clip exactly the shapes our child reports back
(patch size, widths, depths, heads, MLP widths, vocabulary, sequence length, embedding size).
Known differences: open_clip's ViT always prepends a class token (one more token than ours with
'gap' pooling), its text tower has no padding mask (ours builds one; the inputs have no padding)
and pools at the argmax token (ours: last non-padding token). Our configs as shipped (CoAtNet
tower) are timed by the mfu figure. Rounds interleave our settings with open_clip, so drifting
load hits both sides alike, and each setting keeps its faster round.
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
# (config name, gin files, extra bindings, batch, timed steps, rounds).
CONFIGS = [
    ("tiny", ["models/tiny"], [], 128, 20, 2),
    ("demo", ["demo"], [], 128, 20, 2),
    ("mid", ["models/tiny"], MID, 64, 5, 1),
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
    `tf.function`, then (same model, continuing) with `jit_compile=True`."""
    model, images, tokens = steps.build(cfg["gin"], cfg["bindings"], cfg["batch"])
    before = common.rss_mb()
    out = {"params": steps.param_count(model), "shapes": shape_spec(model, cfg["batch"])}
    for name, xla in (("plain", False), ("xla", True)):
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


def _faster(a: dict, b: dict) -> dict:
    """Per mode, the faster of two rounds of one thread setting's child results."""
    return {k: (min(a[k], b[k], key=lambda t: t["step_s"]) if k in ("plain", "xla") else a[k])
            for k in a}


def run() -> dict:
    python = _openclip_python()
    out = []
    for name, gin_files, bindings, batch, num_steps, rounds in CONFIGS:
        skipped = common.missing_gin(name, gin_files[0])
        if skipped:
            out.append(skipped)
            continue
        base = dict(gin=gin_files, bindings=bindings + COMPARISON_VIT[name], batch=batch,
                    steps=num_steps, warmup=WARMUP)
        ours, theirs = {}, []
        for i in range(rounds):
            got = common.run_child_per_threads("benchmarks.openclip_speed", base)
            ours = {k: _faster(ours[k], v) if k in ours else v for k, v in got.items()}
            spec = dict(got["default"]["shapes"], steps=num_steps, warmup=WARMUP, **OPTIMIZER)
            theirs.append(_run_openclip(python, spec))
            print(f"  {name} round {i + 1}/{rounds}: ours plain/XLA pairs/s " + ", ".join(
                f"{k} {v['plain']['pairs_per_s']}/{v['xla']['pairs_per_s']}"
                for k, v in got.items()) + f"; open_clip {theirs[-1]['step_s_by_threads']} s",
                flush=True)
        best_theirs = min(theirs, key=lambda r: r["step_s"])
        row = {"config": name, "batch": batch, "steps": num_steps, "rounds": rounds,
               "shapes": spec, "params": ours["default"]["params"],
               "open_clip_params": best_theirs["params"],
               "ours": common.fastest(ours, "plain"), "ours_xla": common.fastest(ours, "xla"),
               "open_clip": best_theirs,
               "ours_by_threads": {k: {m: v[m] for m in ("plain", "xla")}
                                   for k, v in ours.items()},
               "open_clip_rounds": theirs}
        for key, mode in (("ratio", "ours"), ("ratio_xla", "ours_xla")):
            row[key] = round(row[mode]["pairs_per_s"] / best_theirs["pairs_per_s"], 2)
        print(f"  {name}: ours {row['ours']['pairs_per_s']} ({row['ours']['threads']}), XLA "
              f"{row['ours_xla']['pairs_per_s']} ({row['ours_xla']['threads']}) vs open_clip "
              f"{best_theirs['pairs_per_s']} pairs/s ({best_theirs['threads']} threads)",
              flush=True)
        out.append(row)
    return {"optimizer": OPTIMIZER, "thread_settings": common.TF_THREADS, "rows": out}


def table(payload: dict) -> str:
    rows = []
    for r in payload["rows"]:
        if "skipped" in r:
            rows.append([r["config"]] + ["-"] * 6 + [f"skipped: {r['skipped']}"])
            continue
        s = r["shapes"]
        shape = (f"ViT {s['image_size']}px/{s['patch_size']} w{s['vision_width']} "
                 f"d{s['vision_layers']}, text w{s['text_width']} d{s['text_layers']} "
                 f"L{s['context_length']}")
        ours, xla, theirs = r["ours"], r["ours_xla"], r["open_clip"]
        rows.append([r["config"], r["batch"], f"{ours['pairs_per_s']} ({ours['threads']})",
                     f"{xla['pairs_per_s']} ({xla['threads']})", xla["first_step_s"],
                     f"{theirs['pairs_per_s']} ({theirs['threads']} threads)",
                     f"{r['ratio']} / {r['ratio_xla']}",
                     f"{shape}; {r['params']:,} params (open_clip {r['open_clip_params']:,})"])
    return common.markdown_table(
        ["config", "batch", "ours pairs/s (threads)", "ours XLA pairs/s (threads)",
         "XLA compile s", "open_clip pairs/s (threads)", "ratio (plain / XLA)", "shapes"], rows)


if __name__ == "__main__":
    common.child_main(measure)
