"""Image classifier for BASIC's stage (a): supervised pre-training of the image tower.

The tower is the same class and config as the DualEncoder's `image_tower` but without the
contrastive projection, so its weights transfer by object path:
`tf.train.Checkpoint(image_tower=classifier.image_tower)` restores into
`tf.train.Checkpoint(image_tower=dual_encoder.image_tower)` (expect_partial: the projection is new).
The head is the CoAtNet paper's: a tanh pre-logits Dense of the tower width, then logits.
"""
import dataclasses
from typing import Optional, Sequence

import keras
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models.dual_encoder import (IMAGE_TOWERS, IMAGENET_MEAN, IMAGENET_STD,
                                          resolve_image_config)
from basic_tf.parallel.remat import RematPolicy


@dataclasses.dataclass(frozen=True)
class ImageClassifierConfig:
    """Classification head of stage (a) (gin: `image_classifier_config.<field>`): number of
    classes, tanh pre-logits layer on/off."""
    num_classes: int = 1000
    pre_logits: bool = True

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"image_classifier_config.num_classes={self.num_classes} must be >= 1")


@keras.saving.register_keras_serializable(package="basic_tf")
class ImageClassifier(keras.Model):
    """images float32 [B, H, W, 3] in [0, 1] -> logits float32 [B, num_classes].

    Every setting is an argument (basic_tf/from_gin.py builds them from an experiment's
    image_classifier_config / dual_encoder_config / coatnet_config or vit_config bindings): the
    head (num_classes, pre_logits), the tower kind and its config (CoAtNetConfig or ViTConfig,
    or a dict of its fields), the image side and pixel mean/std, and the remat policy (default
    none; training passes train.remat). get_config records them all.
    """

    def __init__(self, num_classes: int, image_tower: str, image_config, image_size: int,
                 pre_logits: bool = True, remat_policy: Optional[RematPolicy] = None,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_STD, name="image_classifier"):
        super().__init__(name=name)
        self.num_classes, self.pre_logits = num_classes, pre_logits
        self.image_tower_kind, self.image_size = image_tower, image_size
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.image_config = resolve_image_config(self.image_tower_kind, image_config)
        if isinstance(remat_policy, dict):
            remat_policy = RematPolicy(**remat_policy)
        self.remat_policy = remat_policy if remat_policy is not None else RematPolicy()
        self.image_tower = IMAGE_TOWERS[self.image_tower_kind][0](
            self.image_config, output_dim=None, remat_policy=self.remat_policy, name="image_tower")
        width = self.image_config.width
        self.pre_logits_layer = (keras.layers.Dense(width, activation="tanh", name="pre_logits")
                                 if self.pre_logits else None)
        self.logits_layer = keras.layers.Dense(self.num_classes, name="logits")
        self.image_tower.build((None, self.image_size, self.image_size, 3))
        if self.pre_logits_layer is not None:
            self.pre_logits_layer.build((None, width))
        self.logits_layer.build((None, width))
        self.built = True

    def call(self, images, training=False, seed=None):
        seed = L.make_seed(seed, training, self.image_tower.has_randomness)
        x = self.image_tower(L.normalize_pixels(images, self.pixel_mean, self.pixel_std), seed,
                             training=training)
        if self.pre_logits_layer is not None:
            x = self.pre_logits_layer(x)
        return tf.cast(self.logits_layer(x), tf.float32)

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes, "pre_logits": self.pre_logits,
                "image_tower": self.image_tower_kind,
                "image_config": dataclasses.asdict(self.image_config),
                "image_size": self.image_size, "pixel_mean": self.pixel_mean,
                "pixel_std": self.pixel_std, "remat_policy": dataclasses.asdict(self.remat_policy)}
