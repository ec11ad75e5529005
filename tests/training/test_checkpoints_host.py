"""The host part of a checkpoint (checkpoints.make_checkpoint_manager(host_objects=...)): what a
DTensor mesh run saves beside its checkpoint (the input position). Written with each checkpoint,
restored with it, rotated away with it; a checkpoint without one restores the rest and says the
input restarts."""
import os

import numpy as np
import tensorflow as tf

from basic_tf.training import checkpoints
from basic_tf.training.step import TrainState


def _manager(model_dir, host: bool = True):
    state = TrainState()
    weights = tf.Variable([0.0, 0.0])
    data = iter(tf.data.Dataset.range(100))
    manager = checkpoints.make_checkpoint_manager(
        model_dir, state, checkpoint_interval=1, max_to_keep=2, weights=weights,
        host_objects={"data": data} if host else None)
    return manager, state, weights, data


def _run(model_dir, steps: int, host: bool = True):
    """`steps` steps (step, verified step, weights, one input element each), a save after each;
    -> (manager, state, weights, data)."""
    manager, state, weights, data = _manager(model_dir, host)
    for _ in range(steps):
        state.step.assign_add(1)
        state.verified_step.assign(state.step)
        weights.assign_add([1.0, 2.0])
        next(data)
        manager.save()
    return manager, state, weights, data


def test_host_part_is_saved_restored_and_rotated_with_its_checkpoint(tmp_path):
    model_dir = str(tmp_path)
    _run(model_dir, 4)
    host = sorted(f for f in os.listdir(os.path.join(model_dir, checkpoints.HOST_DIR))
                  if f.endswith(".index"))
    assert host == ["ckpt-3.index", "ckpt-4.index"]  # max_to_keep=2: ckpt-1, ckpt-2 went

    manager, state, weights, data = _manager(model_dir)
    assert checkpoints.restore_latest(manager, 0).endswith("ckpt-4")
    np.testing.assert_allclose(weights.numpy(), [4.0, 8.0])
    assert int(next(data)) == 4  # the input continues where step 4 left it


def test_settle_drops_the_host_parts_of_unverified_checkpoints(tmp_path):
    model_dir = str(tmp_path)
    manager, state, weights, data = _run(model_dir, 3)
    state.verified_step.assign(2)  # ckpt-3's weights never gave a finite loss
    assert manager.settle().endswith("ckpt-2")
    host_dir = os.path.join(model_dir, checkpoints.HOST_DIR)
    assert sorted(os.listdir(host_dir)) == ["ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    manager, state, weights, data = _manager(model_dir)
    assert checkpoints.restore_latest(manager, 0).endswith("ckpt-2")
    assert int(next(data)) == 2


def test_checkpoint_without_host_part_restores_and_says_the_input_restarts(tmp_path, caplog):
    caplog.set_level("WARNING", logger="absl")
    model_dir = str(tmp_path)
    _run(model_dir, 1, host=False)
    manager, state, weights, data = _manager(model_dir)
    assert checkpoints.restore_latest(manager, 0).endswith("ckpt-1")
    np.testing.assert_allclose(weights.numpy(), [1.0, 2.0])
    assert int(next(data)) == 0
    assert "the input pipeline restarts from its first batch" in caplog.text

