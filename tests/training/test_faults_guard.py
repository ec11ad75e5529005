"""Faults in whole training runs from an empty model_dir (README "Reliability"): loss spikes
are rejected and counted by the skipped-step guard, a run whose every step is non-finite from the
start ends in the guard, a full disk at a save is named and keeps the previous checkpoint, and
checkpoints fall at exact multiples of the interval and at the end. A file of its own beside
test_faults.py (whose tests share one trained model_dir): pytest-xdist hands out whole files, and
each test here trains a model in-process (10-20 s alone), so the two files run on both workers.
Each test fails on the code before the fault was handled (main 8fa76eb)."""
import glob
import os

import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.training import checkpoints
from basic_tf.training.trainer import SkippedStepsError
from test_faults import _train
from training_helpers import bindings, scalar_events


def test_loss_spike_guard_skips_and_counts(tiny_data, tmp_path):
    # A factor of 0.01 makes every loss above 1% of the running median a "spike" once armed:
    # all of them, whatever the batches (0.5 let a batch with half the median loss through
    # when the input order changed, 2026-12-08).
    model_dir = str(tmp_path / "run")
    # 6 steps (was 8; the run's cost is its trace and input pipeline, the steps are small):
    # armed at step 2, then two loops of rejected steps, counted.
    result = _train(model_dir, tiny_data, "train.train_steps = 6", "train.loss_spike_factor = 0.01",
                    "train.loss_spike_window = 2", "train.max_consecutive_nonfinite = 100")
    (_, rejected), = scalar_events(os.path.join(model_dir, "train"), "rejected_steps")
    assert rejected == {2: 0, 4: 2, 6: 4}  # armed after 2 applied steps
    assert result["step"] == 6 and tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


# Slow (a whole run, 15 s alone): the fast tier checks its two parts, the summary at a zero
# scale (test_faults.py::test_temperature_summary_survives_a_zero_scale) and the guard stopping a
# run that diverges (test_faults.py::test_divergence_keeps_the_last_good_state_then_resumes,
# test_trainer.py::test_nonfinite_steps_are_skipped_counted_then_stop).
@pytest.mark.slow
def test_absurd_learning_rate_from_the_start_ends_in_the_guard(tiny_data, tmp_path):
    # Before: ZeroDivisionError in the summaries once the temperature's scale reached 0.
    model_dir = str(tmp_path / "run")
    with pytest.raises(SkippedStepsError, match="newest good checkpoint is "):
        _train(model_dir, tiny_data, "train.train_steps = 30", "make_optimizer.learning_rate = 1e5",
               "train.max_consecutive_nonfinite = 2")


def test_full_disk_at_a_save_is_named_and_keeps_the_previous(tiny_data, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    real_write = tf.train.Checkpoint._write
    calls = []

    def write(self, prefix, options=None):
        calls.append(prefix)
        if prefix.endswith("ckpt-4"):
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return real_write(self, prefix, options=options)

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
    with pytest.raises(checkpoints.CheckpointWriteError,
                       match=r"^model_dir .*: could not write the checkpoint of step 4 .*No "
                             r"space left on device.*ckpt-2 is intact"):
        _train(model_dir, tiny_data, "train.train_steps = 6")
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


def test_checkpoints_at_exact_multiples_and_the_end(tiny_data, tmp_path):
    model_dir = str(tmp_path / "run")
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=8) + [
        "train.train_steps = 7", "train.steps_per_loop = 3", "train.checkpoint_interval = 4",
        "train.max_checkpoints = 5"])
    from_gin.train(model_dir)
    steps = sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                   for p in glob.glob(os.path.join(model_dir, "ckpt-*.index")))
    # Loops of 3 end at 3, 4, 7 (was 11 steps: [4, 8, 11]; the second multiple repeated the
    # first). Before: 3 (after the first loop), then the first loop end past the interval.
    assert steps == [4, 7]
