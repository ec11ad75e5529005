"""basic_tf.models: towers (CoAtNet, ViT, text Transformer) and the DualEncoder that ties them.

Every model takes its config dataclasses as constructor arguments and never reads gin
(ModelConfigs holds an experiment's; basic_tf/from_gin.py builds it from the bindings).
"""
from basic_tf.models.classifier import ImageClassifier, ImageClassifierConfig
from basic_tf.models.coatnet import CoAtNet, CoAtNetConfig, preset_config
from basic_tf.models.dual_encoder import DualEncoder, DualEncoderConfig
from basic_tf.models.layers import no_moving_stat_updates
from basic_tf.models.model_configs import ModelConfigs
from basic_tf.models.param_count import (coatnet_param_count, dual_encoder_param_count,
                                        text_tower_param_count, vit_param_count)
from basic_tf.models.text import TextTowerConfig, TextTransformer
from basic_tf.models.vit import ViT, ViTConfig

__all__ = ["CoAtNet", "CoAtNetConfig", "preset_config", "ImageClassifier",
           "ImageClassifierConfig", "coatnet_param_count", "dual_encoder_param_count",
           "text_tower_param_count", "vit_param_count", "DualEncoder", "DualEncoderConfig",
           "ModelConfigs", "no_moving_stat_updates", "TextTowerConfig", "TextTransformer", "ViT",
           "ViTConfig"]
