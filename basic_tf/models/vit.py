"""ViT image tower (Dosovitskiy et al. 2021): images [B, H, W, 3] -> features [B, width or D].

Conv patch embedding, learned position embedding, optional CLS token, pre-LN TransformerBlocks,
final LayerNorm, then 'cls' or 'gap' (global average over patches) pooling.
"""
import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models import mesh_ops
from basic_tf.parallel.remat import RematPolicy

POOLINGS = ("cls", "gap")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """ViT hyper-parameters (defaults: ViT-B/16); gin binds them as `vit_config.<field>`.
    mlp_dim None means 4 x width."""
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: Optional[int] = None
    pooling: str = "gap"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self):
        L.check_transformer_config(self, "vit_config", POOLINGS)


@keras.saving.register_keras_serializable(package="basic_tf")
class ViT(L.Tower, keras.layers.Layer):
    """Block i uses seed fold_in(seed, i) and `remat_policy.wrap(fn(x), i)` (seed captured)."""

    def __init__(self, config: ViTConfig, output_dim: Optional[int] = None,
                 remat_policy: Optional[RematPolicy] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = ViTConfig(**config)
        c = config
        self.patch_embedding = keras.layers.Conv2D(c.width, c.patch_size, c.patch_size,
                                                   padding="valid", name="patch_embedding")
        self.dropout = L.Dropout(c.dropout_rate, name="embedding_dropout")
        rates = L.drop_path_rates(c.drop_path_rate, c.depth)
        blocks = [L.TransformerBlock(c.width, c.num_heads, c.mlp_dim, c.dropout_rate,
                                     c.attention_dropout_rate, rates[i], name=f"block{i}")
                  for i in range(c.depth)]
        self._init_tower(config, output_dim, remat_policy, blocks, norm_epsilon=1e-6)

    def build(self, input_shape):
        b, h, w, _ = input_shape
        c = self.config
        if h is None or w is None or h % c.patch_size or w % c.patch_size:
            raise ValueError(f"ViT needs a static image size divisible by patch_size={c.patch_size}; "
                             f"got {h}x{w}")
        tokens = (h // c.patch_size) * (w // c.patch_size) + (1 if c.pooling == "cls" else 0)
        self.patch_embedding.build(input_shape)
        self.position_embedding = self.add_weight(
            shape=(tokens, c.width), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding")
        if c.pooling == "cls":
            self.cls_token = self.add_weight(shape=(c.width,), initializer="zeros", name="cls_token")
        for block in self.blocks:
            block.build((b, tokens, c.width))
        self._build_head(b, c.width)

    def call(self, images, seed=None, training=False):
        c = self.config
        seed = L.make_seed(seed, training, self.has_randomness)
        x = mesh_ops.patch_embedding(self.patch_embedding, images)
        x = tf.reshape(x, [-1, x.shape[1] * x.shape[2], c.width])
        if c.pooling == "cls":
            cls = tf.broadcast_to(tf.cast(self.cls_token, x.dtype), tf.shape(x[:, :1]))
            x = tf.concat([cls, x], axis=1)
        x = x + tf.expand_dims(tf.cast(self.position_embedding, x.dtype), 0)
        x = self.dropout(x, L.fold_seed(seed, c.depth), training=training)
        x = self.final_norm(self._run_blocks(x, seed, training))
        return self._project(x[:, 0] if c.pooling == "cls" else tf.reduce_mean(x, axis=1))
