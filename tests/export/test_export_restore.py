"""Loading trained weights for export (tools/export.py --checkpoint)."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.export import restore_weights


def test_restore_weights_from_keras_weights_file(model, tmp_path):
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    fresh = type(model).from_config(model.get_config())
    assert any(np.any(a.numpy() != b.numpy()) for a, b in zip(fresh.weights, model.weights))
    assert restore_weights(fresh, path) == path
    for restored, trained in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy())


def test_restore_weights_refuses_a_checkpoint_missing_model_variables(model, tmp_path):
    """A TF checkpoint that lacks some of the model's variables must not export silently."""
    partial = tf.Module()
    partial.some = list(model.image_tower.weights[:3])
    path = tf.train.Checkpoint(model=partial).save(str(tmp_path / "ckpt" / "ckpt"))
    with pytest.raises(ValueError, match=f"holds 3 variables under 'model/' but the model has "
                                         f"{len(model.weights)}"):
        restore_weights(model, path)
    with pytest.raises(ValueError, match="holds 3 variables"):   # a directory: its latest
        restore_weights(model, str(tmp_path / "ckpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TF checkpoint in directory"):
        restore_weights(model, str(tmp_path / "empty"))
