"""Reading a trained model back (training/checkpoints.py: checkpoint_path, restore_model) and
stage (b)'s image-tower init: one resolver of "a model_dir or a ckpt-N prefix", whose errors
name the flag or binding and its value."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.training import checkpoints, pretrain


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
