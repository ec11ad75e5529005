"""basic_tf.models: towers (CoAtNet, ViT, text Transformer) and the DualEncoder that ties them.

Importing this package registers every model gin configurable: dual_encoder_config,
coatnet_config, vit_config, text_tower_config, image_classifier_config (each is its config
dataclass, e.g. coatnet_config() is CoAtNetConfig with the gin bindings applied).
"""
from basic_tf.models.classifier import (ImageClassifier, ImageClassifierConfig,
                                        image_classifier_config)
from basic_tf.models.coatnet import CoAtNet, CoAtNetConfig, coatnet_config, preset_config
from basic_tf.models.dual_encoder import DualEncoder, DualEncoderConfig, dual_encoder_config
from basic_tf.models.layers import no_moving_stat_updates
from basic_tf.models.param_count import (coatnet_param_count, dual_encoder_param_count,
                                        text_tower_param_count, vit_param_count)
from basic_tf.models.text import TextTowerConfig, TextTransformer, text_tower_config
from basic_tf.models.vit import ViT, ViTConfig, vit_config

__all__ = ["CoAtNet", "CoAtNetConfig", "coatnet_config", "preset_config", "ImageClassifier",
           "ImageClassifierConfig", "image_classifier_config", "coatnet_param_count",
           "dual_encoder_param_count", "text_tower_param_count", "vit_param_count", "DualEncoder", "DualEncoderConfig",
           "dual_encoder_config", "no_moving_stat_updates", "TextTowerConfig", "TextTransformer",
           "text_tower_config", "ViT", "ViTConfig", "vit_config"]
