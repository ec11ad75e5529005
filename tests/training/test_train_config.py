"""TrainConfig checks every setting once, naming the binding and its value; gin's `train.*`
bindings build it (basic_tf/from_gin.py) under the names users type; the Placement refuses a mesh
beside a strategy. No training: each fault is injected into the config alone."""
import dataclasses

import pytest

from basic_tf import config, from_gin
from basic_tf.training.placement import Placement
from basic_tf.training.train_config import MAX_LOSS_WINDOW, TrainConfig
from strategies import mirrored_strategy


@pytest.mark.parametrize("settings, message", [
    (dict(train_steps=-5), r"^train.train_steps=-5 must be a positive integer"),
    (dict(train_steps="ten"), r"^train.train_steps='ten' must be a positive integer"),
    (dict(checkpoint_interval=0), r"^train.checkpoint_interval=0 must be a positive integer"),
    (dict(max_checkpoints=0), r"^train.max_checkpoints=0 must be a positive integer"),
    (dict(max_consecutive_nonfinite=0),
     r"^train.max_consecutive_nonfinite=0 must be a positive integer"),
    (dict(loss_spike_window=MAX_LOSS_WINDOW + 1),
     rf"^train.loss_spike_window={MAX_LOSS_WINDOW + 1} must be in \[1, {MAX_LOSS_WINDOW}\]"),
    (dict(clip_norm="x"), r"^train.clip_norm='x' must be a positive number or None"),
    (dict(seed=1.5), r"^train.seed=1.5 must be an integer"),
    (dict(loss_chunk=-1), r"^train.loss_chunk=-1 must be a non-negative integer"),
    (dict(local_loss="yes"), r"^train.local_loss='yes' must be True or False"),
    (dict(mixed_precision="fp8"), r"^train.mixed_precision='fp8' is not one of"),
    (dict(remat="sometimes"), r"^train.remat='sometimes' is not a remat policy"),
    (dict(stage="finetune"), r"^train.stage='finetune' is not one of"),
    (dict(stage="pretrain", eval_interval=10), r"^train.eval_interval is for stage='contrastive'"),
    (dict(stage="pretrain", loss_kind="sigmoid"),
     r"^train.loss_kind='sigmoid' is for stage='contrastive', not stage='pretrain'"),
    (dict(stage="pretrain", init_image_tower_from="a"),
     r"^train.init_image_tower_from / train.lock_image_tower belong to stage='contrastive'"),
    (dict(lock_image_tower=True), r"^train.lock_image_tower=True needs train.init_image_tower_"),
    (dict(mesh="data:4"), r"^--mesh='data:4': expected comma-separated axis:size pairs"),
    (dict(mesh="batch:4,model:2", local_loss=True),
     r"^train.local_loss=True does nothing with train.mesh='batch:4,model:2'"),
])
def test_every_setting_is_checked_once_naming_the_binding(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"train_steps": 10, **settings})


def test_train_steps_is_needed_to_train_not_to_plan():
    assert TrainConfig().num_micro_batches == 1  # the planner sizes a step without it
    with pytest.raises(ValueError, match=r"^train.train_steps is unbound"):
        TrainConfig().check_trainable()
    TrainConfig(train_steps=1).check_trainable()


def test_gin_bindings_keep_their_names_and_overrides_win():
    config.parse([], ["train.train_steps = 7", "train.num_micro_batches = 2",
                      "train.remat = 'every_k:3'", "train.max_consecutive_nonfinite = 4",
                      "train.mesh = 'batch:4,model:2'"])
    train = from_gin.train_config()
    assert (train.train_steps, train.num_micro_batches, train.max_consecutive_nonfinite) == (7, 2, 4)
    assert train.remat_every == 3 and train.mesh_sizes == {"batch": 4, "model": 2}
    assert from_gin.train_config(mesh="batch:8,model:1").mesh == "batch:8,model:1"
    assert dataclasses.replace(train, mesh="").mesh is None  # an empty --mesh: the strategy
    config.parse([], ["train.train_steps = 7", "train.local_loss = True",
                      "train.mesh = 'batch:4,model:2'"])
    with pytest.raises(ValueError, match=r"^train.local_loss=True does nothing with train.mesh"):
        from_gin.train_config()


def test_a_mesh_replaces_the_strategy():
    with pytest.raises(ValueError, match=r"^train.mesh / --mesh=batch:8,model:1 replaces the "
                                         r"tf.distribute strategy"):
        Placement(mirrored_strategy(4), "batch:8,model:1")
    placement = Placement()
    assert placement.mesh is None and placement.num_replicas == 1
