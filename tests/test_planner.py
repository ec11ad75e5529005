"""basic_tf.planner: FLOPs against the CoAtNet paper and the built model's weights, parameters
(basic_tf.models.param_count) against the built model and BASIC-L's ~3B, memory arithmetic,
and the recommendation. Arithmetic only (the measured memory check is
benchmarks/planner_memory.py)."""
import re

import numpy as np
import pytest

from basic_tf import config, from_gin, planner
from basic_tf.models.coatnet import preset_config

# CoAtNet paper (Dai et al. 2021), Table 3 / ImageNet-1K at 224: FLOPs as multiply-adds.
PAPER_GMACS_224 = {"coatnet-0": 4.2, "coatnet-1": 8.4, "coatnet-2": 15.7, "coatnet-3": 34.7}
VIT_TINY = ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 8",
            "vit_config.width = 64", "vit_config.depth = 2", "vit_config.num_heads = 2"]




@pytest.mark.parametrize("preset", sorted(PAPER_GMACS_224))
def test_coatnet_forward_flops_match_paper(preset):
    cost = planner.coatnet_cost(preset_config(preset), 224, embed_dim=0, num_classes=1000)
    assert cost.flops / 2e9 == pytest.approx(PAPER_GMACS_224[preset], rel=0.10)



def _built(gin_bindings):
    config.parse(["models/tiny"], gin_bindings)
    model = from_gin.dual_encoder()
    model({"images": np.zeros((1, model.image_size, model.image_size, 3), np.float32),
           "token_ids": np.ones((1, model.max_text_len), np.int32)})
    return model


def _dense_kernels(layer):
    return [w for w in layer.weights if w.path.endswith("kernel") and len(w.shape) == 2]


@pytest.mark.parametrize("bindings", [[], VIT_TINY], ids=["coatnet", "vit"])
def test_params_equal_built_model_and_flops_equal_weight_enumeration(bindings):
    model = _built(bindings)
    cfg = from_gin.model_configs()
    img, txt, counts = planner.tower_costs(cfg)
    assert counts["total"] == model.count_params()
    # Independent FLOPs reference for the text tower: every Dense kernel of the blocks runs on
    # all n tokens, the projection on one vector; attention adds 4 n^2 w per block.
    t = cfg.text
    n = t.max_len
    block_kernels = [k for b in model.text_tower.blocks for k in _dense_kernels(b)]
    reference = 2 * n * sum(int(np.prod(k.shape)) for k in block_kernels)
    reference += 4 * n * n * t.width * t.depth + 2 * t.width * model.embed_dim
    assert txt.flops == reference
    if bindings:  # ViT: the same, plus the patch-embedding convolution
        v = cfg.image
        n = (model.image_size // v.patch_size) ** 2
        kernels = [k for b in model.image_tower.blocks for k in _dense_kernels(b)]
        reference = 2 * n * sum(int(np.prod(k.shape)) for k in kernels)
        reference += 2 * n * int(np.prod(model.image_tower.patch_embedding.kernel.shape))
        reference += 4 * n * n * v.width * v.depth + 2 * v.width * model.embed_dim
        assert img.flops == reference


def _basic_l():
    config.parse(["basic_l"])
    return from_gin.model_configs()


def test_basic_l_is_about_three_billion_parameters():
    plan = planner.plan_step(_basic_l(), 65536, data_replicas=2048)
    total = plan.params["total"]
    assert 2.7e9 < total < 3.3e9, total
    # ~2.4B CoAtNet-7 image tower + ~0.6-0.7B text tower (paper: ~3B in all).
    assert 2.3e9 < plan.params["image"] < 2.6e9
    assert 0.5e9 < plan.params["text"] < 0.8e9


def _tiny_config():
    config.parse(["models/tiny"])
    return from_gin.model_configs()


def test_memory_arithmetic():
    cfg = _tiny_config()
    img, txt, counts = planner.tower_costs(cfg)
    base = planner.plan_step(cfg, 512)
    assert base.params == counts
    params = base.params["total"]
    assert base.memory["weights"] == 4 * params
    assert base.memory["optimizer state"] == 8 * params  # AdamW: two float32 slots
    assert base.memory["gradients"] == 4 * params
    assert base.memory["activations"] == 4 * 512 * (img.saved() + txt.saved())
    assert base.memory["logits"] == 16 * 512 * 512
    # Accumulation: activations of one micro-batch, a second gradient buffer, same logits.
    acc = planner.plan_step(cfg, 512, num_micro_batches=4)
    assert acc.memory["activations"] == pytest.approx(base.memory["activations"] / 4)
    assert acc.memory["gradients"] == 2 * base.memory["gradients"]
    assert acc.memory["logits"] == base.memory["logits"]
    # The accumulation's two while-loop passes cost a constant on top of the runtime's own.
    assert acc.memory["runtime overhead"] == base.memory["runtime overhead"] + 50 * planner.MB
    # Recompute keeps block inputs only, plus one block's activations.
    remat = planner.plan_step(cfg, 512, remat_every=1)
    blocks = img.blocks + txt.blocks
    expected = (img.outside_saved + txt.outside_saved + sum(b.input for b in img.blocks)
                + sum(b.input for b in txt.blocks) + max(b.saved for b in img.blocks)
                + max(b.saved for b in txt.blocks))
    assert remat.memory["activations"] == 4 * 512 * expected
    assert remat.memory["activations"] < base.memory["activations"]
    assert len(blocks) == 4
    # Data parallelism: the per-replica batch shrinks, the logits are [local, global].
    dp = planner.plan_step(cfg, 512, data_replicas=4)
    assert dp.memory["logits"] == 16 * 128 * 512
    assert dp.memory["activations"] == pytest.approx(base.memory["activations"] / 4)
    # Model FLOPs: 3 x forward + logits; accumulation and remat add hardware FLOPs only.
    forward = 512 * (img.flops + txt.flops)
    assert base.model_flops == 3 * (forward + 2 * 512 * 512 * cfg.dual.embed_dim)
    assert acc.model_flops == base.model_flops
    assert acc.hardware_flops == pytest.approx(base.model_flops + forward)
    assert base.model_flops < remat.hardware_flops < base.model_flops + forward


def test_bad_settings_are_named():
    cfg = _tiny_config()
    with pytest.raises(ValueError, match="num_micro_batches=3"):
        planner.plan_step(cfg, 512, num_micro_batches=3)
    with pytest.raises(ValueError, match="3 data replicas"):
        planner.plan_step(cfg, 512, data_replicas=3)
    with pytest.raises(ValueError, match="optimizer='lion'"):
        planner.plan_step(cfg, 512, optimizer="lion")


def test_recommendation():
    cfg = _tiny_config()
    roomy, _ = planner.recommend(cfg, 1024, devices=4, device_memory_bytes=64 * 2 ** 30)
    assert (roomy.data_replicas, roomy.model_shards, roomy.num_micro_batches,
            roomy.remat_every) == (4, 1, 1, 0)
    # A budget between the plain step and the cheapest fix forces accumulation or remat, and
    # the pick is the cheapest plan that fits.
    plain = planner.plan_step(cfg, 1024, data_replicas=4)
    budget = (plain.peak_bytes - 0.5 * plain.memory["activations"]) / 0.9
    tight, reason = planner.recommend(cfg, 1024, devices=4, device_memory_bytes=budget)
    assert tight.data_replicas == 4 and "fits" in reason
    assert tight.num_micro_batches > 1 or tight.remat_every > 0
    assert tight.peak_bytes <= 0.9 * budget
    # Nothing fits: the report says so instead of returning a silent best effort.
    _, reason = planner.recommend(cfg, 1024, devices=4, device_memory_bytes=1e6)
    assert reason.startswith("nothing fits")


def test_chunked_loss_memory_and_its_recommendation():
    """BASIC's 65,536 batch on one 24 GiB host: the unchunked logits (4 copies of N x N
    float32, 64 GiB) cannot fit, so the plan chunks the loss; its logits term is
    LOSS_CHUNK_BLOCKS [N, C] blocks and LOSS_CHUNK_ROW_BUFFERS [N, D], and the recomputed
    logits are counted as executed FLOPs."""
    cfg = _tiny_config()
    n = 65536
    plain = planner.plan_step(cfg, n, num_micro_batches=64)
    assert plain.memory["logits"] == 16 * n * n
    chunked = planner.plan_step(cfg, n, num_micro_batches=64, loss_chunk=1024)
    d = cfg.dual.embed_dim
    assert chunked.memory["logits"] == 4 * (planner.LOSS_CHUNK_BLOCKS * n * 1024
                                            + planner.LOSS_CHUNK_ROW_BUFFERS * n * d)
    assert chunked.hardware_flops - plain.hardware_flops == pytest.approx(2 * n * n * d)
    best, reason = planner.recommend(cfg, n, devices=1, device_memory_bytes=24 * 2 ** 30)
    assert "fits" in reason and best.loss_chunk > 0 and n % best.loss_chunk == 0
    assert best.peak_bytes <= 0.9 * 24 * 2 ** 30
    small, _ = planner.recommend(cfg, 1024, devices=1, device_memory_bytes=24 * 2 ** 30)
    assert small.loss_chunk == 0  # the whole logits fit: no recomputation
    with pytest.raises(ValueError, match="train.loss_chunk=3000 does not divide"):
        planner.plan_step(cfg, n, loss_chunk=3000)


def test_recommendation_shards_the_model_when_weights_do_not_fit():
    best, reason = planner.recommend(_basic_l(), 65536, devices=2048, device_memory_bytes=16 * 2 ** 30,
                                     activation_bytes=2)
    assert "fits" in reason
    # 3B parameters with AdamW (16 bytes each: weights, two slots, gradients) need > 16 GiB.
    assert best.model_shards > 1
    assert best.peak_bytes <= 0.9 * 16 * 2 ** 30


def test_report_and_mesh_parsing():
    config.parse(["models/tiny"], ["train.num_micro_batches = 2", "train.remat = 'every_k:2'"])
    text = planner.report(from_gin.model_configs(), from_gin.train_config(), 256,
                          *planner.parse_mesh("batch:2,model:1"), device_memory_gb=0.25)
    for words in ("parameters: image", "forward FLOPs per example", "activations", "logits",
                  "2 micro-batch(es) of 64 per replica", "== recommended",
                  "train.remat = ", "train.loss_chunk = ", "mesh data=2 x model=1"):
        assert words in text, text
    assert planner.parse_mesh("", 8) == (8, 1)
    assert planner.parse_mesh("model:4") == (1, 4)
    with pytest.raises(ValueError, match="axis:size pairs"):
        planner.parse_mesh("data:4")


def test_step_setting_resolves_macros():
    """A macro-bound micro-batch count (as demo.gin binds its sizes) is read as its value."""
    import gin

    config.parse(["models/tiny"], ["MICRO = 4", "train.num_micro_batches = %MICRO",
                            "train.remat = 'every_k:2'"])
    try:
        train = from_gin.train_config()
        assert (train.num_micro_batches, train.remat_every, train.loss_chunk) == (4, 2, 0)
        config.parse(["models/tiny"], ["train.remat = 'sometimes'"])
        with pytest.raises(ValueError, match="train.remat='sometimes'"):
            from_gin.train_config()
    finally:
        gin.clear_config()


def test_step_estimate_is_executed_flops_over_devices_peak_and_mfu():
    """--peak_tflops adds a step-time line: executed FLOPs / (devices x peak x MFU); a peak or
    MFU out of range is refused naming both values."""
    config.parse(["models/tiny"], [])
    plan = planner.plan_step(from_gin.model_configs(), 256, data_replicas=4)
    seconds = planner.step_seconds(plan, 100e12, 0.5)
    assert seconds == pytest.approx(plan.hardware_flops / (4 * 100e12 * 0.5))
    text = planner.report(from_gin.model_configs(), from_gin.train_config(), 256, 4, 1,
                          peak_tflops=100, assumed_mfu=0.5)
    assert text.count("step estimate: ") == 2 and "assumed 50% of 100 TFLOP/s" in text, text
    assert "step estimate" not in planner.report(from_gin.model_configs(),
                                                 from_gin.train_config(), 256, 4, 1)
    for peak, mfu in ((0.0, 0.4), (100e12, 0.0), (100e12, 1.5)):
        with pytest.raises(ValueError, match=re.escape(f"peak {peak:g} and mfu {mfu:g}")):
            planner.step_seconds(plan, peak, mfu)


def test_plan_tool_refuses_an_mfu_out_of_range_naming_the_flag():
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(repo, "tools", "plan.py"),
                           "--peak_tflops=275", "--assumed_mfu=1.5"], capture_output=True,
                          text=True, timeout=120, cwd=repo, env={**os.environ, "PYTHONPATH": repo})
    assert proc.returncode != 0
    assert "--assumed_mfu=1.5 in (0, 1]" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# README "Cloud TPU": slice -> (TF devices, GiB per device, peak bfloat16 TFLOP/s per device).
README_SLICES = {"v4-8 (1 host)": (4, 32, 275), "v5e-8 (1 host)": (8, 16, 197),
                 "v4-32 (4 hosts)": (16, 32, 275)}


def test_readme_cloud_tpu_table_is_the_planners():
    """Each row of the README's basic_s table is what recommend() and step_seconds() give."""
    import os
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "README.md")
    with open(readme, encoding="utf-8") as f:
        rows = {line.split("|")[1].strip(): line for line in f if line.startswith("| v")}
    config.parse(["basic_s"], [])
    for name, (devices, gib, peak) in README_SLICES.items():
        best, reason = planner.recommend(from_gin.model_configs(), 65536, devices, gib * 2 ** 30,
                                         optimizer="adafactor_momentum", activation_bytes=2)
        row = rows[name]
        assert reason.split("fits ")[1].split(" (")[0] in row, (reason, row)
        assert f"{best.num_micro_batches} micro-batches of {best.micro_batch}" in row, row
        assert (f"blocks of {best.loss_chunk}" if best.loss_chunk else "whole logits") in row
        assert f"| {planner.step_seconds(best, peak * 1e12, 0.4):.1f} s |" in row, row
