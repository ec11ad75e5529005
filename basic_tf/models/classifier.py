"""Image classifier for BASIC's stage (a): supervised pre-training of the image tower.

The tower is the same class and config as the DualEncoder's `image_tower` but without the
contrastive projection, so its weights transfer by object path:
`tf.train.Checkpoint(image_tower=classifier.image_tower)` restores into
`tf.train.Checkpoint(image_tower=dual_encoder.image_tower)` (expect_partial: the projection is new).
The head is the CoAtNet paper's: a tanh pre-logits Dense of the tower width, then logits.
"""
import dataclasses
from typing import Optional, Sequence

import gin
import keras
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models.dual_encoder import IMAGE_TOWERS, dual_encoder_config, resolve_image_config
from basic_tf.parallel.remat import RematPolicy


@dataclasses.dataclass(frozen=True)
class ImageClassifierConfig:
    """Classification head of stage (a); gin binds it as `image_classifier_config.<field>`:
    number of classes, tanh pre-logits layer on/off."""
    num_classes: int = 1000
    pre_logits: bool = True

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"image_classifier_config.num_classes={self.num_classes} must be >= 1")


image_classifier_config = gin.external_configurable(ImageClassifierConfig,
                                                    "image_classifier_config")


@keras.saving.register_keras_serializable(package="basic_tf")
class ImageClassifier(keras.Model):
    """images float32 [B, H, W, 3] in [0, 1] -> logits float32 [B, num_classes].

    Tower kind, tower config, image size and pixel mean/std come from gin's dual_encoder_config /
    coatnet_config / vit_config unless given; the remat policy is an argument (default none; the
    trainer passes train.remat). get_config records them all, so from_config rebuilds the same
    model whatever gin holds then.
    """

    def __init__(self, num_classes: Optional[int] = None, pre_logits: Optional[bool] = None,
                 image_tower: Optional[str] = None, image_config=None,
                 image_size: Optional[int] = None, remat_policy: Optional[RematPolicy] = None,
                 pixel_mean: Optional[Sequence[float]] = None,
                 pixel_std: Optional[Sequence[float]] = None, name="image_classifier"):
        super().__init__(name=name)
        head = image_classifier_config()
        d = dual_encoder_config()
        self.num_classes = head.num_classes if num_classes is None else num_classes
        self.pre_logits = head.pre_logits if pre_logits is None else pre_logits
        self.image_tower_kind = image_tower or d.image_tower
        self.image_size = image_size or d.image_size
        self.pixel_mean = tuple(float(v) for v in (pixel_mean or d.pixel_mean))
        self.pixel_std = tuple(float(v) for v in (pixel_std or d.pixel_std))
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
