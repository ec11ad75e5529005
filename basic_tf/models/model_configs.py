"""ModelConfigs: every hyper-parameter of an experiment's models, as one value.

The models take their configs as constructor arguments and never read gin; this is what an
experiment hands them (basic_tf/from_gin.py builds it from the dual_encoder_config.*,
coatnet_config.* or vit_config.*, text_tower_config.* and image_classifier_config.* bindings).
"""
import dataclasses
from typing import Optional, Union

from basic_tf.models.classifier import ImageClassifier, ImageClassifierConfig
from basic_tf.models.coatnet import CoAtNetConfig
from basic_tf.models.dual_encoder import DualEncoder, DualEncoderConfig, resolve_image_config
from basic_tf.models.text import TextTowerConfig
from basic_tf.models.vit import ViTConfig
from basic_tf.parallel.remat import RematPolicy


@dataclasses.dataclass(frozen=True)
class ModelConfigs:
    """dual: DualEncoderConfig; image: the tower config dual.image_tower names (CoAtNetConfig or
    ViTConfig); text: TextTowerConfig; classifier: stage (a)'s head."""
    dual: DualEncoderConfig
    image: Union[CoAtNetConfig, ViTConfig]
    text: TextTowerConfig
    classifier: ImageClassifierConfig = ImageClassifierConfig()

    def __post_init__(self):
        resolve_image_config(self.dual.image_tower, self.image)  # the kind matches

    def dual_encoder(self, remat_policy: Optional[RematPolicy] = None) -> DualEncoder:
        """Stage (b)'s model."""
        return DualEncoder(self.dual, self.image, self.text, remat_policy=remat_policy)

    def image_classifier(self, remat_policy: Optional[RematPolicy] = None,
                         num_classes: Optional[int] = None) -> ImageClassifier:
        """Stage (a)'s model: the DualEncoder's image tower, image side and pixel statistics with
        the classifier head (num_classes overrides the head's)."""
        return ImageClassifier(num_classes or self.classifier.num_classes,
                               self.dual.image_tower, self.image, self.dual.image_size,
                               pre_logits=self.classifier.pre_logits, remat_policy=remat_policy,
                               pixel_mean=self.dual.pixel_mean, pixel_std=self.dual.pixel_std)
