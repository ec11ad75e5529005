"""workers.WorkerCheckpointManager in one process (the two-process run: test_multi_worker.py).

A chief and a non-chief manager share one model_dir, as two workers do: the chief's files are
the only ones in model_dir besides the non-chief's input position; the non-chief restores the
chief's checkpoint and its own position; a missing position is an error naming the file.
The default strategy stands in for the cluster (its barrier is one replica meeting itself).
"""
import os

import pytest
import tensorflow as tf

from basic_tf.training import workers
from basic_tf.training.checkpoints import restore_latest
from basic_tf.training.step import TrainState


def _worker(model_dir, role, start):
    """A worker's state, 'model' weight and input iterator (range(start, ...) : its shard)."""
    state = TrainState()
    weight = tf.Variable([0.0, 0.0])
    iterator = iter(tf.data.Dataset.range(start, start + 100))
    manager = workers.WorkerCheckpointManager(
        tf.distribute.get_strategy(), role, model_dir, state, checkpoint_interval=2,
        max_to_keep=3, data=iterator, model=tf.train.Checkpoint(weight=weight))
    return state, weight, iterator, manager


CHIEF = workers.WorkerRole("worker-0", True, 2)
OTHER = workers.WorkerRole("worker-1", False, 2)


def test_one_process_is_its_own_chief():
    assert workers.role_of(tf.distribute.get_strategy()) == workers.WorkerRole("", True, 1)


def test_chief_writes_model_dir_the_other_only_its_position_and_resumes_from_both(tmp_path):
    model_dir = str(tmp_path / "run")
    for role, start in ((CHIEF, 0), (OTHER, 1000)):
        state, weight, iterator, manager = _worker(model_dir, role, start)
        for step in (1, 2, 3, 4):
            state.step.assign(step)
            weight.assign([step, 0.0])
            next(iterator)
            manager.save()
        assert manager.save(check_interval=False) is None  # orbit's 2nd save of a step: none
    scratch = workers.write_dir(model_dir, OTHER)
    assert os.listdir(scratch) == []  # its copy of the checkpoint went after each save
    workers.remove_scratch(model_dir, OTHER)  # what loop.train does at the end
    assert sorted(os.listdir(model_dir)) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001",
        "ckpt-4.index", "input_position"]
    assert sorted(os.listdir(os.path.join(model_dir, "input_position", "worker-1"))) == [
        "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001",
        "ckpt-4.index"]

    for role, start in ((CHIEF, 0), (OTHER, 1000)):
        state, weight, iterator, manager = _worker(model_dir, role, start)
        assert restore_latest(manager, 0) == os.path.join(model_dir, "ckpt-4")
        assert int(state.step.numpy()) == 4 and weight.numpy().tolist() == [4.0, 0.0]
        # The next element after 4 taken: this worker's own shard, not the chief's.
        assert int(next(iterator).numpy()) == start + 4


def test_missing_position_is_an_error_naming_it(tmp_path):
    model_dir = str(tmp_path / "run")
    state, weight, iterator, chief = _worker(model_dir, CHIEF, 0)
    state.step.assign(2)
    chief.save()
    state, weight, iterator, other = _worker(model_dir, OTHER, 1000)
    position = os.path.join(model_dir, "input_position", "worker-1", "ckpt-2")
    with pytest.raises(ValueError, match=f"{position}.index is missing: worker-1's input "
                                         "position"):
        restore_latest(other, 0)
