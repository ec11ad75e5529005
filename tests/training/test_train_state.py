"""TrainState's checkpoint keys (training/step.py CHECKPOINT_KEYS): the skipped-step counters
were first named nonfinite_steps / consecutive_nonfinite, and model_dirs written then must
resume. A checkpoint of that layout, built by hand as the old TrainState (a tf.Module whose
attributes were the keys) was saved, resumes through the run's restore path with its counts,
and a checkpoint written now has the same keys."""
import tensorflow as tf

from basic_tf.training import checkpoints
from basic_tf.training.step import TrainState
from basic_tf.training.train_config import MAX_LOSS_WINDOW

# The old TrainState's attributes and the values its checkpoint holds.
OLD_STATE = {"step": 7, "nonfinite_steps": 3, "consecutive_nonfinite": 2, "rejected_steps": 1,
             "verified_step": 6, "global_batch_size": 8, "applied_steps": 4}


def _write_old_layout(model_dir: str) -> str:
    """model_dir/ckpt-7 as a run before the rename wrote it -> its path."""
    old = tf.Module(name="train_state")
    for name, value in OLD_STATE.items():
        setattr(old, name, tf.Variable(value, dtype=tf.int64))
    old.recent_losses = tf.Variable(tf.fill([MAX_LOSS_WINDOW], 2.5))
    checkpoint = tf.train.Checkpoint(state=old, weights=tf.Variable([1.0, 2.0]))
    return tf.train.CheckpointManager(checkpoint, model_dir, 3).save(checkpoint_number=7)


def _state_keys(path: str) -> set:
    return {name.split("/")[1] for name, _ in tf.train.list_variables(path)
            if name.startswith("state/")}


def test_checkpoint_of_the_nonfinite_key_layout_resumes_with_its_counts(tmp_path):
    model_dir = str(tmp_path)
    old_path = _write_old_layout(model_dir)
    state, weights = TrainState(), tf.Variable([0.0, 0.0])
    manager = checkpoints.make_checkpoint_manager(model_dir, state, checkpoint_interval=1,
                                                  weights=weights)

    assert checkpoints.restore_latest(manager, global_batch_size=8) == old_path
    assert (int(state.step.numpy()), int(state.skipped_steps.numpy()),
            int(state.consecutive_skipped.numpy()), int(state.rejected_steps.numpy()),
            int(state.verified_step.numpy()), int(state.applied_steps.numpy())) == (7, 3, 2, 1,
                                                                                     6, 4)
    assert float(state.recent_losses.numpy()[0]) == 2.5
    assert weights.numpy().tolist() == [1.0, 2.0]

    state.step.assign(8)
    state.consecutive_skipped.assign(0)  # the last step applied: a checkpoint is written
    new_path = manager.save()
    assert new_path.endswith("ckpt-8")
    assert _state_keys(new_path) == _state_keys(old_path) == set(OLD_STATE) | {"recent_losses"}
