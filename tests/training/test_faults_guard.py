"""The skipped-step guard in whole training runs (README "Reliability"): loss spikes are
rejected and counted, and a run whose every step is non-finite from the start ends in the guard
naming the newest good checkpoint. A file of its own beside test_faults.py (pytest-xdist hands
out whole files; each test here trains a model in-process). Each test fails on the code before
the fault was handled (main 8fa76eb)."""
import os

import pytest
import tensorflow as tf

from basic_tf.training.trainer import SkippedStepsError
from test_faults import _train
from training_helpers import scalar_events


def test_loss_spike_guard_skips_and_counts(tiny_data, tmp_path):
    # A factor below 1 makes every loss above the running median a "spike" once armed.
    model_dir = str(tmp_path / "run")
    result = _train(model_dir, tiny_data, "train.train_steps = 8", "train.loss_spike_factor = 0.5",
                    "train.loss_spike_window = 2", "train.max_consecutive_nonfinite = 100")
    (_, rejected), = scalar_events(os.path.join(model_dir, "train"), "rejected_steps")
    assert rejected == {2: 0, 4: 2, 6: 4, 8: 6}  # armed after 2 applied steps
    assert result["step"] == 8 and tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


def test_absurd_learning_rate_from_the_start_ends_in_the_guard(tiny_data, tmp_path):
    # Before: ZeroDivisionError in the summaries once the temperature's scale reached 0.
    model_dir = str(tmp_path / "run")
    with pytest.raises(SkippedStepsError, match="newest good checkpoint is "):
        _train(model_dir, tiny_data, "train.train_steps = 30", "make_optimizer.learning_rate = 1e5",
               "train.max_consecutive_nonfinite = 2")
