"""tools/train.py --mesh: the orbit Trainer on a DTensor mesh, run as a user runs it (subprocesses
on 8 virtual CPUs, mesh batch:2,model:4, batch 8, tiny TFRecords; Grappler off to halve the
DTensor compilations).

1. Stage (a) on the mesh in mixed bfloat16 (1 step) writes a checkpoint P; the misuse runs go
   alongside it.
2. Stage (b) with LiT (image tower from P, locked) and evaluation every 2 steps: on the mesh for
   2 steps (ckpt-2), then the same command with train_steps=4 resumes mid-epoch; on one device for
   4 steps uninterrupted. Per-step losses 1..4 and the validation loss at steps 2 and 4 agree
   within float32 rounding (the mesh reorders every reduction: tests/float32_bounds.py, about
   5e-4 relative per step of models/tiny; a lost update or a wrong batch moves the loss by
   1e-2 or more): so the mesh step equals one device's and the resume is exact, including the
   input position (saved beside the DTensor checkpoint in model_dir/host/; a restarted input would
   give steps 3-4 the batches of steps 1-2).
3. The final checkpoint restores into an unsharded DualEncoder (what tools/export.py does with
   --checkpoint=<model_dir>) and gives finite unit-norm embeddings.
4. Misuse: a mesh of 6 devices on 4 exits non-zero naming both; --mesh with --strategy is a
   usage error; the mesh run resumed without --mesh says that the mesh is missing.

Meshes of 4 and 8 devices (every axis size) train the same step: test_dtensor_coverage.py.
Cost: four DTensor compilations of a step or an evaluation and four of a save (TF retraces a
sharded save per call).
"""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training"))
from float32_bounds import TINY_LOSS_REDUCTIONS, assert_trajectory_close  # noqa: E402
from training_helpers import bindings, scalar_events, write_tiny_data  # noqa: E402

# Slow: tools/train.py --mesh and one-device runs in subprocesses.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")
MESH = "batch:2,model:4"


def _train(model_dir, binds, *flags):
    cmd = [sys.executable, TRAIN, "--gin_file=models/tiny", f"--model_dir={model_dir}", *flags] + [
        f"--gin_bindings={b}" for b in binds]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def _losses(model_dir, kind: str = "train", tag: str = "loss") -> dict:
    return {step: value for _, values in scalar_events(os.path.join(model_dir, kind), tag)
            for step, value in values.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh_tool")
    data = write_tiny_data(str(root / "data"), n=32)
    binds = lambda steps, **kw: bindings(data, global_batch_size=8, train_steps=steps,
                                         steps_per_loop=1, checkpoint_interval=2, **kw)
    mesh_dir, one_dir, stage_a = (str(root / name) for name in ("mesh", "one_device", "stage_a"))
    mesh_flags = ("--virtual_cpu_devices=8", f"--mesh={MESH}",
                  "--gin_bindings=make_training_mesh.grappler=False")
    with ThreadPoolExecutor(3) as pool:
        pretrain = pool.submit(_train, stage_a, binds(1, stage="pretrain",
                                                      mixed_precision="mixed_bfloat16") + [
            "image_classifier_config.num_classes = 4"], *mesh_flags)
        bad_mesh = pool.submit(_train, str(root / "bad"), binds(1), "--virtual_cpu_devices=4",
                               "--mesh=batch:3,model:2")
        with_strategy = pool.submit(_train, str(root / "bad2"), binds(1), f"--mesh={MESH}",
                                    "--strategy=mirrored:2")
        out = {"pretrain": pretrain.result(), "bad_mesh": bad_mesh.result(),
               "with_strategy": with_strategy.result()}
        lit = lambda steps: binds(steps, eval_interval=2, init_image_tower_from=stage_a,
                                  lock_image_tower=True)
        first = pool.submit(_train, mesh_dir, lit(2), *mesh_flags)
        one_device = pool.submit(_train, one_dir, lit(4))
        out.update(first=first.result(), one_device=one_device.result())
    out["resumed"] = _train(mesh_dir, lit(4), *mesh_flags)
    # The same model_dir resumed without --mesh (a copy: the checkpoints stay as they are).
    out["no_mesh_dir"] = str(root / "no_mesh")
    shutil.copytree(mesh_dir, out["no_mesh_dir"])
    out["no_mesh"] = _train(out["no_mesh_dir"], lit(5))
    out.update(stage_a=stage_a, mesh_dir=mesh_dir, one_dir=one_dir)
    return out


def test_stage_a_trains_on_the_mesh_in_mixed_bfloat16(runs):
    pretrain = runs["pretrain"]
    assert pretrain.returncode == 0, pretrain.stderr[-4000:]
    assert "step 1/1 (100%) | loss " in pretrain.stderr
    assert tf.train.latest_checkpoint(runs["stage_a"]).endswith("ckpt-1")
    loss = _losses(runs["stage_a"])[1]
    assert np.isfinite(loss), loss


def test_mesh_run_trains_evaluates_logs_and_checkpoints(runs):
    for name in ("first", "resumed"):
        assert runs[name].returncode == 0, runs[name].stderr[-4000:]
    assert "step 2/2 (100%) | loss " in runs["first"].stderr
    assert "image tower initialised from stage (a) checkpoint" in runs["first"].stderr
    tags = {tag for tag in ("image_to_text_accuracy", "skipped_records")
            if scalar_events(os.path.join(runs["mesh_dir"], "train"), tag)}
    assert tags == {"image_to_text_accuracy", "skipped_records"}
    assert os.path.exists(os.path.join(runs["mesh_dir"], "operative_config.gin"))
    for step in (2, 4):
        assert os.path.exists(os.path.join(runs["mesh_dir"], "host", f"ckpt-{step}.index"))


def test_same_command_resumes_mid_epoch_exactly(runs):
    resumed = runs["resumed"]
    ckpt2 = os.path.join(runs["mesh_dir"], "ckpt-2")
    assert f"resuming from {ckpt2} at step 2" in resumed.stderr
    assert "input pipeline restarts" not in resumed.stderr
    assert "step 4/4 (100%)" in resumed.stderr and "step 1/4" not in resumed.stderr
    assert tf.train.latest_checkpoint(runs["mesh_dir"]).endswith("ckpt-4")


def test_losses_and_validation_equal_one_device(runs):
    assert runs["one_device"].returncode == 0, runs["one_device"].stderr[-4000:]
    # Was rtol=1e-5, which an AMD EPYC (AVX2) missed at step 3 (2.386064 against 2.386033,
    # 1.3e-5). The bound: float32 rounding of the loss's chain of reductions, once per step
    # (the weights of step s carry the rounding of s - 1 updates): s * 5.1e-4 relative.
    mesh, one = _losses(runs["mesh_dir"]), _losses(runs["one_dir"])
    assert sorted(mesh) == sorted(one) == [1, 2, 3, 4], (mesh, one)
    assert_trajectory_close(mesh, one, TINY_LOSS_REDUCTIONS, "training loss, mesh vs one device")
    mesh_eval, one_eval = (_losses(d, "eval", "validation/loss")
                           for d in (runs["mesh_dir"], runs["one_dir"]))
    assert sorted(mesh_eval) == sorted(one_eval) == [2, 4], (mesh_eval, one_eval)
    # The validation loss at step s evaluates the weights after s updates: bound of step s + 1.
    assert_trajectory_close(mesh_eval, one_eval, TINY_LOSS_REDUCTIONS,
                            "validation loss, mesh vs one device", first_step=0)


def test_final_checkpoint_loads_into_an_unsharded_model(runs):
    from basic_tf import config, from_gin
    from basic_tf.training.checkpoints import restore_model

    config.parse(["models/tiny"])
    model = from_gin.dual_encoder()
    assert restore_model(model, runs["mesh_dir"]).endswith("ckpt-4")
    # Trained weights, not a fresh initialisation: models/tiny.gin starts at temperature 0.07.
    assert abs(1.0 / float(model.logit_scale.numpy()) - 0.07) > 1e-4
    rng = np.random.default_rng(0)
    image = model.encode_image(tf.constant(rng.uniform(size=(2, 32, 32, 3)), tf.float32))
    text = model.encode_text(tf.constant(rng.integers(3, 60, size=(2, 16)), tf.int32))
    for emb in (image, text):
        assert np.all(np.isfinite(emb.numpy()))
        np.testing.assert_allclose(np.linalg.norm(emb.numpy(), axis=-1), 1.0, rtol=1e-5)


def test_misuse_is_reported(runs):
    bad = runs["bad_mesh"]
    assert bad.returncode != 0
    assert "train.mesh='batch:3,model:2' has 3 x 2 = 6 devices but 4 CPU devices" in bad.stderr
    usage = runs["with_strategy"]
    assert usage.returncode != 0
    assert f"--mesh={MESH} replaces the tf.distribute strategy" in usage.stderr


def test_a_mesh_run_resumed_without_the_mesh_says_so(runs):
    """Issue 24 item 7: before, the restore failed blaming "another gin config"."""
    no_mesh = runs["no_mesh"]
    assert no_mesh.returncode == 2, no_mesh.stderr[-3000:]
    assert "was trained on a DTensor mesh, and the mesh is missing" in no_mesh.stderr
    assert "Traceback" not in no_mesh.stderr and "another gin config" not in no_mesh.stderr
    assert tf.train.latest_checkpoint(runs["no_mesh_dir"]).endswith("ckpt-4")
