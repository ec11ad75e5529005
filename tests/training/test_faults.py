"""Faults injected into training (README "Reliability"): divergence, resume with changed
settings, unreadable or half-written checkpoints, bad settings (a full disk, checkpoint steps and
the skipped-step guard in runs of their own: test_faults_guard.py). Each test fails on the code
before the fault was handled (main 8fa76eb)."""
import glob
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.training.contrastive import ContrastiveTask
from basic_tf.training.trainer import SkippedStepsError
from training_helpers import bindings, checkpoint_values, scalar_events

FAST = ["train.steps_per_loop = 2", "train.checkpoint_interval = 2", "train.log_every = 2"]


def _train(model_dir, data, *extra, batch=8):
    config.parse(["models/tiny"], bindings(data, global_batch_size=batch) + FAST + list(extra))
    return from_gin.train(model_dir)


@pytest.fixture(scope="module")
def trained_6_steps(tiny_data, tmp_path_factory):
    """One run of 6 steps (ckpt-2, ckpt-4, ckpt-6; learning rate 3e-3), trained once for the
    tests that resume, corrupt or refuse a trained model_dir; each works on a copy."""
    model_dir = str(tmp_path_factory.mktemp("faults") / "run")
    _train(model_dir, tiny_data, "train.train_steps = 6")
    return model_dir


@pytest.fixture
def run_of_6_steps(trained_6_steps, tmp_path):
    """A copy of trained_6_steps in this test's tmp_path (checkpoint paths are relative)."""
    return shutil.copytree(trained_6_steps, str(tmp_path / "run"))


def test_divergence_keeps_the_last_good_state_then_resumes(tiny_data, run_of_6_steps):
    model_dir = run_of_6_steps
    good = os.path.join(model_dir, "ckpt-6")
    before = checkpoint_values(good, "model/")
    # An absurd learning rate: the first update is applied (its loss was finite) and blows the
    # weights up; every later step is non-finite. Before the fix the learning rate came back
    # from the checkpoint (no divergence at all), and with it rotation deleted the good states.
    with pytest.raises(SkippedStepsError, match=f"newest good checkpoint is {good} "):
        _train(model_dir, tiny_data, "train.train_steps = 40", "make_optimizer.learning_rate = 1e30",
               "train.max_consecutive_nonfinite = 3", "train.max_checkpoints = 1")
    assert tf.train.latest_checkpoint(model_dir) == good
    after = checkpoint_values(good, "model/")
    for key, value in before.items():
        assert np.all(np.isfinite(after[key])), key
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    result = _train(model_dir, tiny_data, "train.train_steps = 10")
    assert result["step"] == 10 and "loss" in result["progress"][-1]
    # Resumed from ckpt-6, not started afresh (before the fix of keep_only the settled index
    # listed ckpt-6 as "preserved", a new manager saw no checkpoint and the rerun began at 0).
    first_logged = int(re.match(r"step (\d+)/", result["progress"][0]).group(1))
    assert first_logged > 6, result["progress"]
    final = checkpoint_values(os.path.join(model_dir, "ckpt-10"), "model/")
    assert all(np.all(np.isfinite(v)) for v in final.values())


def test_learning_rate_changed_on_resume_is_honoured_and_recorded(tiny_data, run_of_6_steps):
    model_dir = run_of_6_steps   # trained at make_optimizer.learning_rate = 3e-3
    _train(model_dir, tiny_data, "train.train_steps = 8", "make_optimizer.learning_rate = 1e-4")
    (_, lr), = [e for e in scalar_events(os.path.join(model_dir, "train"), "learning_rate")
                if 8 in e[1]]
    assert lr[8] == pytest.approx(1e-4)  # before the fix: 3e-3, restored from the checkpoint
    kept = os.path.join(model_dir, "operative_config-until-6.gin")
    assert "make_optimizer.learning_rate = 0.003" in open(kept).read()
    assert "make_optimizer.learning_rate = 0.0001" in open(
        os.path.join(model_dir, "operative_config.gin")).read()


def test_shape_changing_settings_are_refused_naming_them(tiny_data, run_of_6_steps,
                                                         monkeypatch):
    model_dir = run_of_6_steps
    traced = []
    monkeypatch.setattr(ContrastiveTask, "replica_step",
                        lambda *a: traced.append(1) or pytest.fail("traced a step"))
    with pytest.raises(ValueError, match=r"^make_dataset.global_batch_size=16, but .*ckpt-6 "
                                         r"was trained with 8.*global_batch_size: 8 -> 16"):
        _train(model_dir, tiny_data, "train.train_steps = 8", batch=16)
    with pytest.raises(ValueError, match=r"ckpt-6' does not fit this model: .*shape.*"
                                         r"text_tower_config.width: 64 -> 32"):
        _train(model_dir, tiny_data, "train.train_steps = 8", "text_tower_config.width = 32")
    assert not traced


def test_unreadable_latest_checkpoint_falls_back_and_stale_temporaries_go(tiny_data,
                                                                          run_of_6_steps, caplog):
    caplog.set_level("INFO")
    caplog.set_level("INFO", logger="absl")
    model_dir = run_of_6_steps
    data = glob.glob(os.path.join(model_dir, "ckpt-6.data-*"))[0]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    stale = os.path.join(model_dir, "ckpt-8_temp")
    os.makedirs(stale)
    open(os.path.join(stale, "part-00000-of-00001.index"), "wb").close()
    result = _train(model_dir, tiny_data, "train.train_steps = 8")
    assert result["step"] == 8
    log = caplog.text
    assert f"checkpoint {os.path.join(model_dir, 'ckpt-6')} is unreadable" in log
    assert f"resuming from {os.path.join(model_dir, 'ckpt-4')} at step 4" in log
    assert not os.path.exists(stale)


@pytest.mark.parametrize("binding, message", [
    ("train.train_steps = -5", r"^train.train_steps=-5 must be a positive integer"),
    ("train.train_steps = 'ten'", r"^train.train_steps='ten' must be a positive integer"),
    ("train.checkpoint_interval = 0", r"^train.checkpoint_interval=0 must be a positive"),
    ("train.clip_norm = 'x'", r"^train.clip_norm='x' must be a positive number or None"),
    ("train.num_micro_batches = 0", r"^train.num_micro_batches=0 must be a positive integer"),
    ("train.loss_kind = 'cosine'", r"^train.loss_kind='cosine' is not one of"),
    ("train.remat = 'every_k:0'", r"^train.remat='every_k:0' is not a remat policy: use 'none'"),
    (("train.stage = 'pretrain'", "train.num_micro_batches = 2"),
     r"^train.num_micro_batches=2 is for stage='contrastive', not stage='pretrain'"),
])
def test_bad_settings_are_named_before_any_work(tiny_data, tmp_path, binding, message):
    with pytest.raises(ValueError, match=message):
        _train(str(tmp_path / "run"), tiny_data, "train.train_steps = 2",
               *([binding] if isinstance(binding, str) else binding))
    assert not os.path.exists(str(tmp_path / "run"))


def test_unwritable_model_dir_is_named(tiny_data):
    with pytest.raises(ValueError, match=r"^--model_dir=/proc/1/run is not writable"):
        _train("/proc/1/run", tiny_data, "train.train_steps = 2")


def test_temperature_summary_survives_a_zero_scale():
    class Model:
        logit_scale = tf.constant(0.0)
    task = ContrastiveTask.__new__(ContrastiveTask)
    task.model = Model()
    assert task.summaries()["temperature"] == float("inf")  # was ZeroDivisionError


def test_export_and_evaluate_refuse_nonfinite_weights(tmp_path):
    from basic_tf.training.checkpoints import restore_model
    config.parse(["models/tiny"])
    model = from_gin.dual_encoder()
    model.text_tower.variables[0].assign(tf.fill(model.text_tower.variables[0].shape, np.nan))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))  # like the trainer's
    with pytest.raises(ValueError, match=r"^checkpoint '.*ckpt-1' has non-finite weights \(1 "):
        restore_model(from_gin.dual_encoder(), path)


def test_gin_faults_are_named_on_the_first_line(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("train.train_steps = (\n")
    with pytest.raises(config.ConfigError, match=rf"^gin file {bad}: syntax error"):
        config.parse([str(bad)])
    with pytest.raises(config.ConfigError, match=r"^gin binding 'trian.train_steps = 3': No "
                                                 r"configurable matching 'trian'"):
        config.parse(["models/tiny"], ["trian.train_steps = 3"])
    with pytest.raises(config.ConfigError, match=r"^gin binding 'train.train_steps = \)': "
                                                 r"syntax error"):
        config.parse(["models/tiny"], ["train.train_steps = )"])


def test_old_binding_names_fail_at_parse_time_naming_their_new_place(tmp_path):
    """The step's settings moved to `train` (values travel down as arguments): a gin file with
    the old names stops at parse time, naming the file, the line and the new binding."""
    with pytest.raises(config.ConfigError, match=r"^gin binding 'compute_contrastive_step\."
                                                 r"num_micro_batches = 2': No configurable "
                                                 r"matching 'compute_contrastive_step'.*is now "
                                                 r"train\.num_micro_batches"):
        config.parse(["models/tiny"], ["compute_contrastive_step.num_micro_batches = 2"])
    old = tmp_path / "old.gin"
    old.write_text("include 'tiny.gin'\nremat_policy.mode = 'every_block'\n")
    with pytest.raises(config.ConfigError, match=rf"^gin file {old}: No configurable matching "
                                                 r"'remat_policy'.*line 2.*is now train\.remat"):
        config.parse([str(old)])
    with pytest.raises(config.ConfigError, match=r"'contrastive_loss'.*train\.loss_kind"):
        config.parse(["models/tiny"], ["contrastive_loss.kind = 'sigmoid'"])
