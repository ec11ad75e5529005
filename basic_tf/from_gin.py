"""The top's one builder: an experiment's gin bindings -> the config objects the library takes.

Below the tools, models (and training) take their settings as arguments and never read gin.
This module is where gin meets them: it registers the config dataclasses under the names
experiment files bind, and builds them from the parsed bindings:

  gin name                   object                       built by
  dual_encoder_config.*      models.DualEncoderConfig     model_configs()
  coatnet_config.*           models.CoAtNetConfig         model_configs() (image_tower coatnet)
  vit_config.*               models.ViTConfig             model_configs() (image_tower vit)
  text_tower_config.*        models.TextTowerConfig       model_configs()
  image_classifier_config.*  models.ImageClassifierConfig model_configs()
  train.*                    training.TrainConfig         train_config()

`train(model_dir, strategy)` is tools/train.py's run: the TrainConfig, its Placement (the
strategy, or train.mesh's DTensor mesh), the models and make_dataset's pipelines, handed to
basic_tf.training.loop.train; `dry_run(strategy)` (--dry_run) builds the same and runs one
compiled step (basic_tf.training.dry_run), writing nothing.

`load_trained_model` is the tools' loader (tools/evaluate.py, tools/export.py, the demo): the
gin config's DualEncoder, tokenizer and data view, with a checkpoint's weights.

Each gin name is the dataclass with the bindings applied (explicit arguments win); the
dataclass itself never reads gin. The data, zero-shot and export rooms' names (make_dataset.*,
input_limits.*, serving_limits.*, ...) are registered in basic_tf/from_gin_data.py.
"""
import contextlib
import dataclasses
import functools
from typing import Callable, Optional

import gin

from basic_tf.models import (CoAtNetConfig, DualEncoder, DualEncoderConfig, ImageClassifierConfig,
                             ModelConfigs, TextTowerConfig, ViTConfig)
from basic_tf.parallel import strategy as strategy_lib, threads
from basic_tf.parallel.dtensor import layouts
from basic_tf.parallel.remat import RematPolicy
from basic_tf.training import mesh_placement, optimizers, schedules
from basic_tf.training.progress import ConfigText
from basic_tf.training.train_config import TrainConfig

dual_encoder_config = gin.external_configurable(DualEncoderConfig, "dual_encoder_config")
coatnet_config = gin.external_configurable(CoAtNetConfig, "coatnet_config")
vit_config = gin.external_configurable(ViTConfig, "vit_config")
text_tower_config = gin.external_configurable(TextTowerConfig, "text_tower_config")
image_classifier_config = gin.external_configurable(ImageClassifierConfig,
                                                    "image_classifier_config")
IMAGE_CONFIGS = {"coatnet": coatnet_config, "vit": vit_config}
# The training settings: gin's `train.*` bindings (the names of the former loop.train's
# arguments, so every experiment file and --gin_bindings keeps working).
train_config = gin.external_configurable(TrainConfig, "train")
# The optimizer, its schedule and the training mesh (make_optimizer.*,
# learning_rate_schedule.*, make_training_mesh.*): passed to the Placement by train().
make_optimizer = gin.external_configurable(optimizers.make_optimizer, "make_optimizer",
                                           denylist=["variables"])
learning_rate_schedule = gin.external_configurable(schedules.learning_rate_schedule,
                                                   "learning_rate_schedule")
make_training_mesh = gin.external_configurable(mesh_placement.make_training_mesh,
                                               "make_training_mesh", denylist=["flag"])
layout_rules = gin.external_configurable(layouts.layout_rules, "layout_rules")
# The tools' process settings (basic_tf/cli.py): the strategy and TensorFlow's thread pools.
make_strategy = gin.external_configurable(strategy_lib.make_strategy, "make_strategy")
cpu_threads = gin.external_configurable(threads.apply_cpu_threads, "cpu_threads")


def model_configs() -> ModelConfigs:
    """The parsed gin config's models: dual_encoder_config, the image tower's config (the kind
    dual_encoder_config.image_tower names), text_tower_config and image_classifier_config."""
    dual = dual_encoder_config()
    return ModelConfigs(dual=dual, image=IMAGE_CONFIGS[dual.image_tower](),
                        text=text_tower_config(), classifier=image_classifier_config())


def dual_encoder(remat_policy: Optional[RematPolicy] = None, **overrides) -> DualEncoder:
    """The parsed gin config's DualEncoder; `overrides` replace DualEncoderConfig fields
    (ValueError naming an unknown one)."""
    configs = model_configs()
    fields = {f.name for f in dataclasses.fields(DualEncoderConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"DualEncoder got unknown overrides {unknown}; known: {sorted(fields)}")
    dual = dataclasses.replace(configs.dual, **overrides)
    return DualEncoder(dual, configs.image, configs.text, remat_policy=remat_policy)



def train(model_dir: str, strategy=None, *, dataset_fn: Optional[Callable] = None,
          eval_dataset_fn: Optional[Callable] = None, eval_fn: Optional[Callable] = None,
          **overrides) -> dict:
    """basic_tf.training.loop.train of the parsed gin config: train_config(**overrides) (e.g.
    mesh= from tools/train.py --mesh), placed by `strategy` (default: the current one) or its
    mesh; the models of model_configs(); make_dataset's training (and evaluation) pipelines
    unless dataset_fn / eval_dataset_fn are given; the fingerprint of
    make_dataset.tokenizer_path, recorded in model_dir. Returns loop.train's record."""
    from basic_tf import config as gin_config
    from basic_tf.data import tokenizer_record
    from basic_tf.from_gin_data import make_dataset
    from basic_tf.training import loop

    config = train_config(**overrides)
    placement = _placement(config, strategy)
    tokenizer_path = gin_config.bound_value("make_dataset.tokenizer_path", None)
    return loop.train(
        model_dir, config, placement, models=model_configs(),
        dataset_fn=dataset_fn or functools.partial(make_dataset, training=True),
        eval_dataset_fn=eval_dataset_fn or functools.partial(make_dataset, training=False),
        eval_fn=eval_fn,
        config_text=ConfigText(gin.config_str(), gin.operative_config_str),
        tokenizer=(tokenizer_record.fingerprint_of_file(tokenizer_path)
                   if tokenizer_path and _exists(tokenizer_path) else None))


def _placement(config: TrainConfig, strategy):
    """The run's Placement: `strategy`, or train.mesh's DTensor mesh."""
    from basic_tf.training.placement import Placement
    return Placement(strategy, config.mesh, optimizer_fn=make_optimizer,
                     mesh_fn=make_training_mesh,
                     layout_rules=layout_rules() if config.mesh else None)


def dry_run(strategy=None, **overrides) -> dict:
    """basic_tf.training.dry_run.dry_run of the parsed gin config (tools/train.py --dry_run):
    train_config(**overrides) placed as train() places it, make_dataset's training pipeline;
    one XLA-compiled step, the planner's memory against the device's, nothing written."""
    from basic_tf import config as gin_config
    from basic_tf.from_gin_data import make_dataset
    from basic_tf.training import dry_run as dry_run_lib
    config = train_config(**overrides)
    return dry_run_lib.dry_run(
        config, _placement(config, strategy), models=model_configs(),
        dataset_fn=functools.partial(make_dataset, training=True),
        optimizer_kind=gin_config.bound_value("make_optimizer.kind", "adafactorw"))


def _exists(path: str) -> bool:
    """tf.io.gfile.exists (a missing tokenizer is make_dataset's error to name, not ours)."""
    import tensorflow as tf
    return tf.io.gfile.exists(path)


def load_trained_model(checkpoint: Optional[str], source: str, tokenizer_path: Optional[str] = None,
                       seq_len: Optional[int] = None, strategy=None,
                       allow_unverified: bool = False,
                       allow_other_tokenizer: bool = False) -> tuple:
    """The parsed gin config's DualEncoder with `checkpoint`'s weights (None: as initialised),
    seen as training saw it -> (model, tokenizer, data, restored path or None).

    data: the gin file's make_dataset view (from_gin_data.data_config: image size, seq_len,
    tokenizer, evaluation crop), `tokenizer_path` / `seq_len` overriding it (explicit flags);
    checked against the model, and the tokenizer's pieces against the text tower's vocabulary.
    The model is built in `strategy`'s scope when one is given. `source`: the flag or setting
    that named the checkpoint (training.checkpoints.restore_model, which refuses one that is no
    verified state of its run unless `allow_unverified`). The tokenizer must be the one recorded
    for the checkpoint in training (data/tokenizer_record.py: TokenizerMismatch naming both)
    unless allow_other_tokenizer.
    """
    from basic_tf.data import tokenizer_record
    from basic_tf.data.tokenizer import Tokenizer
    from basic_tf.from_gin_data import data_config
    from basic_tf.training.checkpoints import UNVERIFIED_DIR, restore_model

    data = data_config(tokenizer_path=tokenizer_path, seq_len=seq_len)
    tokenizer = Tokenizer(data.require_tokenizer(), data.seq_len)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = dual_encoder()
    data.check_model(model.image_size, model.max_text_len)
    if tokenizer.vocab_size > model.text_config.vocab_size:
        raise ValueError(f"tokenizer {data.tokenizer_path} has {tokenizer.vocab_size} pieces but "
                         f"text_tower_config.vocab_size={model.text_config.vocab_size}: bind "
                         f"text_tower_config.vocab_size = {tokenizer.vocab_size} (as in "
                         "training) or give the tokenizer the model was trained with")
    restored = (restore_model(model, checkpoint, source, allow_unverified) if checkpoint
                else None)
    if restored:
        tokenizer_record.check(
            tokenizer_record.fingerprint(tokenizer.model_proto, data.tokenizer_path),
            data.describe("tokenizer_path"), restored, UNVERIFIED_DIR, allow_other_tokenizer)
    return model, tokenizer, data, restored
