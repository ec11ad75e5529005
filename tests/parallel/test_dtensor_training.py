"""Five training steps of gin/tiny.gin on a DTensor mesh equal five steps on one device.

Meshes (8,1), (4,2), (2,4), (1,8) of the 8 virtual CPUs, the default (Megatron) layout table,
data split on "batch". Two configurations, each on two meshes, run as two child processes at
once (dtensor_child.py; a DTensor compilation of the tiny step costs ~45 s of CPU):
- AdamW with BASIC accumulation (2 micro-batches) and recompute (remat) on every block;
- AdaFactorW with factored second moments (min_dim_size_to_factor=16), one micro-batch.
Both with decoupled weight decay and global-norm clipping; losses and every variable (weights,
optimizer-updated or not, and BatchNorm statistics) must agree to 1e-5 relative.

Why the optimizers' epsilon is raised here (AdamW 1e-4, AdaFactorW 1e-6): some tiny.gin weights
have an exactly zero gradient (the stem conv bias and the first MBConv pre-norm beta feed a
BatchNorm that removes them; the key third of each qkv bias cancels in the softmax). Their
computed gradient is float32 rounding noise (~1e-10), which differs with the order of sums
(one device or eight), and Adam-type updates g / (|g| + eps) turn it into steps of up to
learning_rate in a random direction. With the default eps (1e-8, 1e-30) those few weights
disagree by O(learning_rate) while the losses still agree to ~1e-6; that is the optimizer
amplifying rounding, not the sharding, and a larger eps makes it negligible.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

COMMON = ["make_optimizer.weight_decay=0.1", "make_optimizer.learning_rate=3e-3"]
CONFIGS = {
    "adamw_accumulation_remat": {
        "meshes": [[8, 1], [2, 4]],
        "bindings": COMMON + ["make_optimizer.kind='adamw'", "make_optimizer.epsilon=1e-4",
                              "compute_contrastive_step.num_micro_batches=2",
                              "remat_policy.mode='every_block'"]},
    "adafactorw_factored": {
        "meshes": [[4, 2], [1, 8]],
        "bindings": COMMON + ["make_optimizer.kind='adafactorw'", "make_optimizer.epsilon=1e-6",
                              "make_optimizer.min_dim_size_to_factor=16"]},
}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_child(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "parallel",
                                                        "dtensor_child.py"), json.dumps(cfg)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    with ThreadPoolExecutor(len(CONFIGS)) as pool:
        outs = pool.map(_run_child, [dict(cfg, steps=5, rtol=1e-5) for cfg in CONFIGS.values()])
        return dict(zip(CONFIGS, outs))


@pytest.mark.parametrize("name,mesh", [(n, tuple(m)) for n, c in CONFIGS.items()
                                       for m in c["meshes"]])
def test_five_tiny_steps_on_a_mesh_equal_one_device(results, name, mesh):
    out = results[name]
    got = out["meshes"]["x".join(map(str, mesh))]
    assert "error" not in got, got.get("error")
    ref = out["reference"]["losses"]
    assert len(got["losses"]) == 5 and ref[-1] < ref[0]  # it trains
    assert got["loss_rel"] < 1e-5, (got["losses"], ref)
    assert got["num_variables"] == 78  # every tiny.gin variable was compared
    assert not got["failing"], got["failing"]
    assert got["weight_rel"] < 1e-5
