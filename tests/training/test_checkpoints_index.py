"""The `checkpoint` index that TrainingCheckpointManager rewrites (settle, a fallback) through
public APIs: entries relative to model_dir as TF writes them, for a relative or an absolute
model_dir, with their save times, so that a fresh tf.train.CheckpointManager (a resumed run)
lists the kept checkpoints and the newest verified one is the latest."""
import os

import pytest
import tensorflow as tf

from basic_tf.training import checkpoints
from basic_tf.training.step import TrainState


@pytest.mark.parametrize("relative", [True, False])
def test_settled_index_lists_the_verified_checkpoints_relative_to_model_dir(tmp_path,
                                                                              monkeypatch,
                                                                              relative):
    monkeypatch.chdir(tmp_path)
    model_dir = "run" if relative else str(tmp_path / "run")
    state, weights = TrainState(), tf.Variable([0.0])
    manager = checkpoints.make_checkpoint_manager(model_dir, state, checkpoint_interval=1,
                                                  max_to_keep=3, weights=weights)
    for _ in range(3):
        state.step.assign_add(1)
        weights.assign_add([1.0])
        manager.save()
    saved = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_timestamps
    state.verified_step.assign(2)  # ckpt-3's weights never gave a finite loss

    assert manager.settle() == os.path.join(model_dir, "ckpt-2")
    text = open(os.path.join(model_dir, "checkpoint")).read()
    assert 'model_checkpoint_path: "ckpt-2"' in text and "ckpt-3" not in text, text
    index = tf.train.get_checkpoint_state(model_dir)
    assert list(index.all_model_checkpoint_timestamps) == list(saved[:2])
    fresh = tf.train.CheckpointManager(tf.train.Checkpoint(weights=weights), model_dir, 3)
    assert fresh.checkpoints == [os.path.join(model_dir, f"ckpt-{n}") for n in (1, 2)]
    assert manager.latest_checkpoint == fresh.latest_checkpoint == os.path.join(model_dir,
                                                                                "ckpt-2")
    assert os.path.exists(os.path.join(model_dir, "unverified", "ckpt-3.index"))

    manager.keep_only([])  # nothing verified at all: the next run starts afresh
    assert tf.train.latest_checkpoint(model_dir) is None and manager.checkpoints == []
