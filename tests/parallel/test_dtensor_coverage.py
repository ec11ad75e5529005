"""DTensor meshes of 4 and 8 devices train models/tiny.gin and demo.gin like one device.

Meshes (batch, model): (4,1), (2,2), (1,4) on 4 virtual CPUs; (8,1), (4,2), (2,4), (1,8) on 8.
What a mesh changes is each axis's size: the batch split (batch axis 1, 2, 4, 8) and which
variables the layout plan shards and how (model axis 1, 2, 4, 8; layouts.plan_layouts decides per
variable dimension and axis size). Each pair below covers an axis size the others do not for its
model, and every axis size runs at least once:
- tiny (CoAtNet, 2 micro-batches, remat): (4,1), (2,2), (1,4), (8,1), (1,8): every batch axis
  size and every model axis size ((8,1): with its 2 micro-batches, a micro-batch of one example
  per device);
- demo: (2,2), (1,4), (1,8): its layout plans at model axis 2, 4 and 8;
- tiny with a ViT image tower (the bindings below): (2,2), (1,8): a model axis that divides its 2
  heads, one larger than them.
A model axis of 1 (the batch-only meshes) divides no variable dimension for any model, and the
batch split does not depend on the model: tiny's (4,1) and (8,1) cover both. Pairs that repeat a
(model, axis size) covered above ran here until the suite went over its time budget, and all 21
pairs (every model on every mesh) passed once by hand (cost below): (4,2), (2,4) and demo on
(8,1) until 2026-12-07; demo and ViT on (4,1) until 2026-12-08 (batch axis 4 and model axis 1,
both tiny's (4,1); the ViT patch-embedding fix below runs on every mesh, (2,2) included).
Each (model, mesh) pair runs five training steps of the trainer's own step
(dtensor_child.py: step.TrainStep, the Trainer's step with its guard, BatchNorm roll-back and
counters, placed by training.Placement on the mesh) and must equal five steps on one device within
float32 rounding of the model's loss chain at the child's batch of 16 (tests/float32_bounds.py:
r = EPS32 * sum(n - 1) over its reductions, 2.3e-4 to 8.2e-4): the loss of step s to s * r
relative, and every variable (weights, BatchNorm statistics) to r of its scale
max(max |w|, STEPS * learning rate) (dtensor_child.py): an Adam-type update moves a weight by
at most about the learning rate, with the gradient's relative rounding r, so five updates differ
by at most STEPS * learning rate * r. (Was 1e-5 for both, a constant that held on one CPU.) A
pair that cannot be sharded would have to fail in shard_model with a
ValueError naming the variable, its dimension and the mesh axis (layouts.plan_layouts); none of
these does. A DTensor compile error, or a child that dies (a segfault), fails the pair with the
error or the child's stderr.

What failed before (issue 14 item 4), and the fixes:
- models/tiny.gin and demo.gin on (2,2) and (4,2): attention's tf.unstack of [B, N, 3, heads, d] —
  DTensor's Unpack expansion gives outputs of the wrong shape when the model axis divides the
  heads ("Expected shape: <8,16,4,32> got shape: <8,16,2,32>"). q, k, v are now slices of the
  fused features (layers.MultiHeadAttention).
- The ViT tower on every mesh: its patch-embedding Conv2D (DTensor ignores the model-sharded
  output layout the position embedding asks for; Conv2DBackpropFilter rejects the stride-8
  'valid' convolution even on (4,1)). mesh_ops.patch_embedding computes it as a matmul over
  flattened patches inside mesh_formulations().

Variety across the pairs, at no extra compile: tiny (CoAtNet) uses AdamW, 2 micro-batches and
remat on every block; tiny (ViT) AdaFactorW with factored second moments; demo AdamW with its
own 2 micro-batches. The optimizers' epsilon is raised (AdamW 1e-4, AdaFactorW 1e-6): some
weights have an exactly zero gradient (the stem conv bias and the first MBConv pre-norm beta
feed a BatchNorm that removes them; the key third of each qkv bias cancels in the softmax), whose
computed value is float32 rounding noise that differs with the order of sums, and Adam-type
updates g / (|g| + eps) turn it into steps of up to the learning rate; a larger eps makes that
negligible while the losses still agree to ~1e-6.

Cost: each pair is one DTensor compilation of the step (20-30 CPU s on 4 devices, 35-50 on 8,
with Grappler off; the five steps after it and the one-device reference are small beside it).
The pairs run in two child processes at once (4 and 8 devices), balanced by that cost. With 17
pairs in three children: 731 s of pytest wall time (`python -m pytest -n 0`, 2026-12-03, load 7)
and 606 s in the full suite (2026-12-07, load 2-6). With 12 pairs in two children: 323 s (the
children run as this test runs them, 2026-12-08, load 1.3-3.2; the 4-device child was the last
by 87 s); with the 10 pairs above: 277 s (load 2.5-3.9; the 4-device child 277 s, the 8-device
one 243 s). All 21 pairs (every model on every mesh) passed once in 16 minutes of the same
machine.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from float32_bounds import (demo_loss_reductions, reduction_rtol, tiny_loss_reductions,
                            tiny_vit_loss_reductions)

# Slow: every mesh shape trains in child processes (the suite's longest test).
pytestmark = pytest.mark.slow

STEPS = 5
BATCH = 16   # dtensor_child.py's default
COMMON = ["make_optimizer.weight_decay=0.1", "make_optimizer.learning_rate=3e-3"]
ADAMW = ["make_optimizer.kind='adamw'", "make_optimizer.epsilon=1e-4"]
VIT = ["dual_encoder_config.image_tower='vit'", "vit_config.patch_size=8", "vit_config.width=64",
       "vit_config.depth=2", "vit_config.num_heads=2", "vit_config.mlp_dim=128",
       "vit_config.pooling='gap'"]
MODELS = {
    "tiny": {"gin": ["models/tiny"], "variables": 78, "step": (2, "every_block"),
             "rtol": reduction_rtol(tiny_loss_reductions(BATCH)),
             "bindings": COMMON + ADAMW + ["train.num_micro_batches=2",
                                           "train.remat='every_block'"]},
    "tiny_vit": {"gin": ["models/tiny"], "variables": 60,
                 "rtol": reduction_rtol(tiny_vit_loss_reductions(BATCH)),
                 "bindings": COMMON + VIT + ["make_optimizer.kind='adafactorw'",
                                             "make_optimizer.epsilon=1e-6",
                                             "make_optimizer.min_dim_size_to_factor=16"]},
    "demo": {"gin": ["demo"], "variables": 66, "bindings": COMMON + ADAMW,
             "rtol": reduction_rtol(demo_loss_reductions(BATCH))},
}
MESHES = {4: [(4, 1), (2, 2), (1, 4)], 8: [(8, 1), (4, 2), (2, 4), (1, 8)]}
# Child processes: (virtual CPUs, [(model, meshes)]), balanced by compile cost (6 pairs of about
# 25 CPU s, 4 of about 42).
CHILDREN = [
    (4, [("tiny", MESHES[4]), ("demo", [(2, 2), (1, 4)]), ("tiny_vit", [(2, 2)])]),
    (8, [("tiny", [(8, 1), (1, 8)]), ("demo", [(1, 8)]), ("tiny_vit", [(1, 8)])]),
]
PAIRS = [(name, tuple(mesh)) for _, cases in CHILDREN for name, meshes in cases
         for mesh in meshes]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_child(child) -> dict:
    devices, cases = child
    spec = {"devices": devices,
            "cases": [{"name": name, "gin": MODELS[name]["gin"], "steps": STEPS,
                       "batch": BATCH, "rtol": MODELS[name]["rtol"],
                       "bindings": MODELS[name]["bindings"], "meshes": [list(m) for m in meshes]}
                      for name, meshes in cases]}
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "parallel",
                                                        "dtensor_child.py"), json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out = json.loads(line)
            results[(out["case"], out.get("mesh", "reference"))] = out
    if proc.returncode != 0:  # a crash: every pair without a result gets the child's stderr
        for name, meshes in cases:
            for key in ["reference"] + ["x".join(map(str, m)) for m in meshes]:
                results.setdefault((name, key), {"error": f"child exited {proc.returncode}: "
                                                          f"{proc.stderr[-4000:]}"})
    return results


@pytest.fixture(scope="module")
def results():
    merged = {}
    with ThreadPoolExecutor(len(CHILDREN)) as pool:
        for out in pool.map(_run_child, CHILDREN):
            merged.update(out)
    return merged


@pytest.mark.parametrize("name,mesh", PAIRS, ids=[f"{n}-{b}x{m}" for n, (b, m) in PAIRS])
def test_five_steps_on_every_mesh_equal_one_device(results, name, mesh):
    missing = {"error": "the child printed no result for it"}
    ref = results.get((name, "reference"), missing)
    assert "error" not in ref, ref["error"]
    got = results.get((name, "x".join(map(str, mesh))), missing)
    assert "error" not in got, got["error"]
    ref_losses = ref["reference"]["losses"]
    if "step" in MODELS[name]:  # the case's train.* step settings reached the task and model
        assert (ref["reference"]["num_micro_batches"],
                ref["reference"]["remat"]) == MODELS[name]["step"]
    assert len(got["losses"]) == STEPS and ref_losses[-1] < ref_losses[0]  # it trains
    for step, (loss, ref_loss) in enumerate(zip(got["losses"], ref_losses), 1):
        bound = step * MODELS[name]["rtol"]
        assert abs(loss - ref_loss) <= bound * abs(ref_loss), (step, got["losses"], ref_losses)
    assert got["num_variables"] == MODELS[name]["variables"]  # every variable was compared
    assert not got["failing"], got["failing"]
    assert got["weight_rel"] <= MODELS[name]["rtol"]
