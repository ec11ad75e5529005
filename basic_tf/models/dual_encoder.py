"""The BASIC / CLIP-style dual encoder: an image tower and a text tower into one unit sphere.

encode_image: images float32 [B, H, W, 3] in [0, 1] -> mean/std normalise -> tower ->
  linear projection -> L2 normalise -> float32 [B, D].
encode_text: token ids int32 [B, L] (0 = padding) -> tower -> projection -> float32 [B, D].
Head: a learned logit scale min(exp(w), max_logit_scale), w initialised to ln(1/init_temperature),
and an optional logit bias (sigmoid loss).

Every setting is an argument: DualEncoder(config, image_config, text_config, remat_policy).
The model never reads gin; basic_tf/from_gin.py builds the configs from an experiment's bindings
(dual_encoder_config.*, coatnet_config.*, vit_config.*, text_tower_config.*) and the training
loop passes `train.remat` as the RematPolicy.
"""
import dataclasses
import math
from typing import Optional

import keras
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models.coatnet import CoAtNet, CoAtNetConfig
from basic_tf.models.text import TextTowerConfig, TextTransformer
from basic_tf.models.vit import ViT, ViTConfig
from basic_tf.parallel.remat import RematPolicy

IMAGE_TOWERS = {"coatnet": (CoAtNet, CoAtNetConfig), "vit": (ViT, ViTConfig)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DualEncoderConfig:
    """Dual-encoder hyper-parameters (gin: `dual_encoder_config.<field>`). The image tower kind
    says which config the image tower takes: CoAtNetConfig or ViTConfig."""
    image_tower: str = "coatnet"
    embed_dim: int = 512
    image_size: int = 224
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    use_logit_bias: bool = False
    logit_bias_init: float = -10.0
    pixel_mean: tuple = IMAGENET_MEAN
    pixel_std: tuple = IMAGENET_STD

    def __post_init__(self):
        if self.image_tower not in IMAGE_TOWERS:
            raise ValueError(f"dual_encoder_config.image_tower={self.image_tower!r} is not one of "
                             f"{sorted(IMAGE_TOWERS)}")
        if not self.init_temperature > 0:
            raise ValueError(f"dual_encoder_config.init_temperature={self.init_temperature} must be > 0")
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))


def resolve_image_config(image_tower: str, image_config):
    """The image tower's config (a dict is built into the tower kind's dataclass), checked
    against the tower kind."""
    if image_tower not in IMAGE_TOWERS:
        raise ValueError(f"image_tower={image_tower!r} is not one of {sorted(IMAGE_TOWERS)}")
    _, config_cls = IMAGE_TOWERS[image_tower]
    if isinstance(image_config, dict):
        image_config = config_cls(**image_config)
    if not isinstance(image_config, config_cls):
        raise ValueError(f"image_config is a {type(image_config).__name__} but image_tower="
                         f"{image_tower!r} needs a {config_cls.__name__}")
    return image_config


@keras.saving.register_keras_serializable(package="basic_tf")
class DualEncoder(keras.Model):
    """DualEncoder(config, image_config, text_config[, remat_policy]).

    config: DualEncoderConfig; image_config: the CoAtNetConfig or ViTConfig that
    config.image_tower names; text_config: TextTowerConfig (dicts of their fields are accepted,
    as from_config passes them); remat_policy: RematPolicy for both towers (default none:
    recomputation only matters to training, which passes `train.remat`).
    Every variable exists after construction (towers are built for image_size / max_len).
    """

    def __init__(self, config: DualEncoderConfig, image_config, text_config,
                 remat_policy: Optional[RematPolicy] = None, name="dual_encoder"):
        super().__init__(name=name)
        if isinstance(config, dict):
            config = DualEncoderConfig(**config)
        image_config = resolve_image_config(config.image_tower, image_config)
        if isinstance(text_config, dict):
            text_config = TextTowerConfig(**text_config)
        if not isinstance(text_config, TextTowerConfig):
            raise ValueError(f"text_config is a {type(text_config).__name__}, not a "
                             "TextTowerConfig")
        self.config, self.image_config, self.text_config = config, image_config, text_config
        self.remat_policy = remat_policy if remat_policy is not None else RematPolicy()

        self.image_tower = IMAGE_TOWERS[config.image_tower][0](
            image_config, output_dim=config.embed_dim, remat_policy=self.remat_policy,
            name="image_tower")
        self.text_tower = TextTransformer(text_config, output_dim=config.embed_dim,
                                          remat_policy=self.remat_policy, name="text_tower")
        self.log_logit_scale = self.add_weight(
            shape=(), dtype="float32", autocast=False, name="log_logit_scale",
            initializer=keras.initializers.Constant(math.log(1.0 / config.init_temperature)))
        self._logit_bias = None
        if config.use_logit_bias:
            self._logit_bias = self.add_weight(
                shape=(), dtype="float32", autocast=False, name="logit_bias",
                initializer=keras.initializers.Constant(config.logit_bias_init))
        self.image_tower.build((None, config.image_size, config.image_size, 3))
        self.text_tower.build((None, text_config.max_len))
        self.built = True

    # Attributes other rooms read.
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def max_text_len(self) -> int:
        return self.text_config.max_len

    @property
    def logit_scale(self) -> tf.Tensor:
        """float32 scalar min(exp(w), max_logit_scale); gradients flow to w below the cap."""
        return tf.minimum(tf.exp(tf.convert_to_tensor(self.log_logit_scale)),
                          self.config.max_logit_scale)

    @property
    def logit_bias(self) -> Optional[tf.Tensor]:
        return None if self._logit_bias is None else tf.convert_to_tensor(self._logit_bias)

    @property
    def image_trainable_variables(self) -> list:
        """Image tower + its projection (Keras `trainable` flags respected). LiT's locking is
        the training task's choice (training/contrastive.py), not a model flag."""
        return list(self.image_tower.trainable_variables)

    @property
    def text_trainable_variables(self) -> list:
        return list(self.text_tower.trainable_variables)

    @property
    def head_trainable_variables(self) -> list:
        """Logit scale (and bias): the variables the loss alone determines."""
        head = [self.log_logit_scale] + ([self._logit_bias] if self._logit_bias is not None else [])
        return [v for v in head if v.trainable]

    def encode_image(self, images, training=False, seed=None) -> tf.Tensor:
        """images float32 [B, H, W, 3] in [0, 1] -> float32 [B, D] unit-norm."""
        seed = L.make_seed(seed, training, self.image_tower.has_randomness)
        x = L.normalize_pixels(images, self.config.pixel_mean, self.config.pixel_std)
        return L.l2_normalize(self.image_tower(x, seed, training=training))

    def encode_text(self, token_ids, training=False, seed=None) -> tf.Tensor:
        """token_ids int32 [B, L] (0 = padding) -> float32 [B, D] unit-norm."""
        seed = L.make_seed(seed, training, self.text_tower.has_randomness)
        return L.l2_normalize(self.text_tower(token_ids, seed, training=training))

    def call(self, inputs, training=False):
        """{"images", "token_ids"} -> (image_emb, text_emb), both float32 [B, D]."""
        return (self.encode_image(inputs["images"], training=training),
                self.encode_text(inputs["token_ids"], training=training))

    def get_config(self):
        return {"name": self.name, "image_config": dataclasses.asdict(self.image_config),
                "text_config": dataclasses.asdict(self.text_config),
                "remat_policy": dataclasses.asdict(self.remat_policy),
                **dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fields = {f.name for f in dataclasses.fields(DualEncoderConfig)}
        dual = DualEncoderConfig(**{k: config.pop(k) for k in fields & set(config)})
        return cls(dual, config.pop("image_config"), config.pop("text_config"),
                   remat_policy=RematPolicy(**config.pop("remat_policy", {})), **config)
