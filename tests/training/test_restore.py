"""Reading a trained model back (training/checkpoints.py: checkpoint_path, restore_model) and
stage (b)'s image-tower init: one resolver of "a model_dir or a ckpt-N prefix", whose errors
name the flag or binding and its value, and which refuses a checkpoint that is no verified state
of its run (under unverified/, or past the newest one its index lists) unless allowed."""
import glob
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.training import checkpoints, pretrain
from basic_tf.training.step import TrainState


class Tracked(keras.Model):
    def __init__(self):
        super().__init__()
        self.first = keras.layers.Dense(3)
        self.second = keras.layers.Dense(2)
        self.first.build((None, 4))
        self.second.build((None, 3))
        self.built = True


class ListHeld(keras.Model):
    """Keras 3 + tf.train.Checkpoint: layers in a plain list are not saved."""
    def __init__(self):
        super().__init__()
        self.blocks = [keras.layers.Dense(3), keras.layers.Dense(2)]
        self.blocks[0].build((None, 4))
        self.blocks[1].build((None, 3))
        self.built = True


def test_restore_round_trip(tmp_path):
    saved = Tracked()
    prefix = tf.train.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    fresh = Tracked()
    assert checkpoints.restore_model(fresh, str(tmp_path)) == prefix  # directory -> latest checkpoint
    for a, b in zip(saved.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_restore_refuses_a_partial_checkpoint(tmp_path):
    prefix = tf.train.Checkpoint(model=ListHeld()).save(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="holds 0 variables .* the model has 4"):
        checkpoints.restore_model(ListHeld(), prefix)


def test_restore_keras_weights_and_missing_paths(tmp_path):
    saved = ListHeld()
    saved.save_weights(str(tmp_path / "m.weights.h5"))
    fresh = ListHeld()
    checkpoints.restore_model(fresh, str(tmp_path / "m.weights.h5"))
    for a, b in zip(saved.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(FileNotFoundError, match=rf"^--model_dir='{tmp_path}' is a directory "
                       "without a checkpoint"):
        checkpoints.restore_model(fresh, str(tmp_path), "--model_dir")
    with pytest.raises(FileNotFoundError, match=rf"^--checkpoint='{tmp_path}/ckpt-7': no "
                       rf"checkpoint there \(no {tmp_path}/ckpt-7.index\)"):
        checkpoints.restore_model(fresh, str(tmp_path / "ckpt-7"))
    with pytest.raises(FileNotFoundError, match=r"^--checkpoint='.*gone.weights.h5': Keras"):
        checkpoints.restore_model(fresh, str(tmp_path / "gone.weights.h5"))


def test_checkpoint_path_resolves_a_model_dir_and_a_prefix(tmp_path):
    prefix = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(tmp_path),
                                        max_to_keep=1).save(checkpoint_number=3)
    assert checkpoints.checkpoint_path(str(tmp_path), "--model_dir") == prefix
    assert checkpoints.checkpoint_path(prefix, "--checkpoint") == prefix


def test_stage_b_init_names_its_binding(tmp_path):
    """train.init_image_tower_from goes through the same resolver: its error names the binding
    (before any model is built)."""
    with pytest.raises(FileNotFoundError,
                       match=rf"^train.init_image_tower_from='{tmp_path}' is a directory"):
        pretrain.restore_image_tower(None, str(tmp_path))


def _settled_run(model_dir):
    """A run of 3 checkpointed steps whose ckpt-3 never gave a finite loss: stopped, settled
    (ckpt-3 moved to unverified/, ckpt-2 the latest) -> the weights of each step."""
    state, model = TrainState(), Tracked()
    manager = checkpoints.make_checkpoint_manager(model_dir, state, checkpoint_interval=1,
                                                  max_to_keep=3, model=model)
    weights = {}
    for step in (1, 2, 3):
        state.step.assign(step)
        for w in model.weights:
            w.assign(np.full(w.shape, float(step), np.float32))
        weights[step] = [w.numpy() for w in model.weights]
        manager.save()
    state.verified_step.assign(2)
    assert manager.settle() == os.path.join(model_dir, "ckpt-2")
    return weights


def test_unverified_checkpoints_are_refused_unless_allowed(tmp_path):
    """Injected faults: --checkpoint naming a checkpoint the divergence guard set aside, where it
    lies (unverified/ckpt-3) and copied back beside the run's (ckpt-3 past the index's ckpt-2).
    Before, both loaded (finite weights pass the non-finite check) and export served NaN."""
    model_dir = str(tmp_path / "run")
    weights = _settled_run(model_dir)
    aside = os.path.join(model_dir, "unverified", "ckpt-3")
    with pytest.raises(ValueError, match=rf"^--checkpoint='{aside}' is not a verified "
                                         rf"checkpoint: it is in {model_dir}/unverified, where "
                                         "its run set it aside"):
        checkpoints.restore_model(Tracked(), aside)
    for f in glob.glob(aside + ".*"):
        shutil.copy(f, model_dir)
    back = os.path.join(model_dir, "ckpt-3")
    with pytest.raises(ValueError, match=rf"^--checkpoint='{back}' is not a verified checkpoint: "
                                         rf"its step 3 is past {model_dir}/ckpt-2, the newest "
                                         "checkpoint its run's index lists"):
        checkpoints.restore_model(Tracked(), back)

    for path, step in ((model_dir, 2), (os.path.join(model_dir, "ckpt-1"), 1)):
        fresh = Tracked()
        checkpoints.restore_model(fresh, path)  # the index's checkpoints load as before
        for a, b in zip(fresh.weights, weights[step]):
            np.testing.assert_array_equal(a.numpy(), b)
    for path in (aside, back):  # --allow_unverified
        fresh = Tracked()
        assert checkpoints.restore_model(fresh, path, allow_unverified=True) == path
        for a, b in zip(fresh.weights, weights[3]):
            np.testing.assert_array_equal(a.numpy(), b)


def test_stage_b_init_refuses_an_unverified_checkpoint(tmp_path):
    """train.init_image_tower_from naming unverified/ckpt-3 is refused naming the binding,
    before any model is built (train.allow_unverified / --allow_unverified lets it through)."""
    model_dir = str(tmp_path / "run")
    _settled_run(model_dir)
    aside = os.path.join(model_dir, "unverified", "ckpt-3")
    with pytest.raises(ValueError, match=rf"^train.init_image_tower_from='{aside}' is not a "
                                         "verified checkpoint: it is in "):
        pretrain.restore_image_tower(None, aside)
    assert checkpoints.checkpoint_path(aside, "train.init_image_tower_from",
                                       allow_unverified=True) == aside
