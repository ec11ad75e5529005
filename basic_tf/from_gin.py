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
basic_tf.training.loop.train.

`load_trained_model` is the tools' loader (tools/evaluate.py, tools/export.py, the demo): the
gin config's DualEncoder, tokenizer and data view, with a checkpoint's weights.

Each gin name is the dataclass with the bindings applied (explicit arguments win); the
dataclass itself never reads gin.
"""
import contextlib
import dataclasses
import functools
from typing import Callable, Optional

import gin

from basic_tf.models import (CoAtNetConfig, DualEncoder, DualEncoderConfig, ImageClassifierConfig,
                             ModelConfigs, TextTowerConfig, ViTConfig)
from basic_tf.parallel.remat import RematPolicy
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
    unless dataset_fn / eval_dataset_fn are given. Returns loop.train's record."""
    from basic_tf.data.pipeline import make_dataset
    from basic_tf.training import loop
    from basic_tf.training.placement import Placement

    config = train_config(**overrides)
    placement = Placement(strategy, config.mesh)
    return loop.train(
        model_dir, config, placement, models=model_configs(),
        dataset_fn=dataset_fn or functools.partial(make_dataset, training=True),
        eval_dataset_fn=eval_dataset_fn or functools.partial(make_dataset, training=False),
        eval_fn=eval_fn)

def load_trained_model(checkpoint: Optional[str], source: str, tokenizer_path: Optional[str] = None,
                       seq_len: Optional[int] = None, strategy=None) -> tuple:
    """The parsed gin config's DualEncoder with `checkpoint`'s weights (None: as initialised),
    seen as training saw it -> (model, tokenizer, data, restored path or None).

    data: the gin file's make_dataset view (basic_tf.data.data_config: image size, seq_len,
    tokenizer, evaluation crop), `tokenizer_path` / `seq_len` overriding it (explicit flags);
    checked against the model, and the tokenizer's pieces against the text tower's vocabulary.
    The model is built in `strategy`'s scope when one is given. `source`: the flag or setting
    that named the checkpoint (training.checkpoints.restore_model).
    """
    from basic_tf.data import data_config
    from basic_tf.data.tokenizer import Tokenizer
    from basic_tf.training.checkpoints import restore_model

    data = data_config.from_gin(tokenizer_path=tokenizer_path, seq_len=seq_len)
    tokenizer = Tokenizer(data.require_tokenizer(), data.seq_len)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = dual_encoder()
    data.check_model(model.image_size, model.max_text_len)
    if tokenizer.vocab_size > model.text_config.vocab_size:
        raise ValueError(f"tokenizer {data.tokenizer_path} has {tokenizer.vocab_size} pieces but "
                         f"text_tower_config.vocab_size={model.text_config.vocab_size}: bind "
                         f"text_tower_config.vocab_size = {tokenizer.vocab_size} (as in "
                         "training) or give the tokenizer the model was trained with")
    restored = restore_model(model, checkpoint, source) if checkpoint else None
    return model, tokenizer, data, restored
