"""open_clip side of the train-step comparison, run in the torch venv (setup_openclip.sh).

  <venv python> -m benchmarks.openclip_step --child '<json shape spec>'

Builds open_clip's `CLIP` (ViT image tower + Transformer text tower) from the shared shape spec
of benchmarks/openclip_speed.py, and times `ClipLoss` forward + backward + `torch.optim.AdamW`
steps on random inputs. Imports no TensorFlow and nothing of basic_tf.

Why the import dance: PyPI's torchvision wheels are CUDA builds (their _C.so links
libtorch_cuda.so) and cannot load beside the CPU torch 2.13.0, and open_clip's package __init__
imports its preprocessing transforms, which need torchvision. The model code itself needs
torchvision for one name only (`FrozenBatchNorm2d`, used to freeze ResNet towers), so we register
a stub for that name and load `open_clip.model` / `open_clip.loss` without the package __init__.
"""
import importlib.util
import os
import sys
import time
import types

from benchmarks import common


def _import_open_clip():
    """Returns (model module, loss module) of the installed open_clip without its __init__."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed in this python: run "
                           "benchmarks/setup_openclip.sh and use the venv it prints")
    from torch import nn

    class FrozenBatchNorm2d(nn.Module):  # only reached by ResNet tower freezing: unused here
        def __init__(self, *args, **kwargs):
            raise RuntimeError("FrozenBatchNorm2d stub: torchvision is unavailable in this venv")

    for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    package = types.ModuleType("open_clip")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["open_clip"] = package
    import open_clip.loss
    import open_clip.model
    return open_clip.model, open_clip.loss


def build(spec: dict):
    """The open_clip CLIP and loss for a shape spec (see openclip_speed.SHAPES)."""
    model_lib, loss_lib = _import_open_clip()
    vision = model_lib.CLIPVisionCfg(
        layers=spec["vision_layers"], width=spec["vision_width"],
        head_width=spec["vision_width"] // spec["vision_heads"],
        mlp_ratio=spec["vision_mlp"] / spec["vision_width"], patch_size=spec["patch_size"],
        image_size=spec["image_size"], no_ln_pre=True, pool_type="avg")
    text = model_lib.CLIPTextCfg(
        context_length=spec["context_length"], vocab_size=spec["vocab_size"],
        width=spec["text_width"], heads=spec["text_heads"], layers=spec["text_layers"],
        mlp_ratio=spec["text_mlp"] / spec["text_width"], no_causal_mask=True, pool_type="argmax")
    model = model_lib.CLIP(embed_dim=spec["embed_dim"], vision_cfg=vision, text_cfg=text)
    return model, loss_lib.ClipLoss()


def measure(spec: dict) -> dict:
    """Times the step with every thread count in spec["threads"] (default: all cores, then 1):
    PyTorch's OpenMP pool degrades badly when other processes share the cores, so the faster
    setting is kept as open_clip's number."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    model, loss_fn = build(spec)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"],
                                  weight_decay=spec["weight_decay"], eps=spec["eps"])
    rng = np.random.default_rng(0)
    b, s = spec["batch"], spec["image_size"]
    images = torch.from_numpy(rng.uniform(size=(b, 3, s, s)).astype(np.float32))
    tokens = torch.from_numpy(
        rng.integers(1, spec["vocab_size"], size=(b, spec["context_length"])).astype(np.int64))

    def step():
        optimizer.zero_grad(set_to_none=True)
        image_emb, text_emb, scale = model(images, tokens)
        loss = loss_fn(image_emb, text_emb, scale)
        loss.backward()
        optimizer.step()
        return loss.item()

    before = common.rss_mb()
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    by_threads = {}
    for threads in spec.get("threads") or [os.cpu_count(), 1]:
        torch.set_num_threads(threads)
        for _ in range(spec["warmup"]):
            step()
        times = []
        for _ in range(spec["steps"]):
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
        by_threads[threads] = float(np.median(times))
    threads, step_s = min(by_threads.items(), key=lambda kv: kv[1])
    return {"impl": "open_clip", "torch": torch.__version__, "threads": threads,
            "step_s_by_threads": {str(k): round(v, 4) for k, v in by_threads.items()},
            "params": sum(p.numel() for p in model.parameters()),
            "first_step_s": round(first, 3), "step_s": round(step_s, 4),
            "pairs_per_s": round(b / step_s, 1), "loss": loss,
            "peak_increase_mb": round(common.peak_rss_mb() - before, 1)}


if __name__ == "__main__":
    common.child_main(measure)
