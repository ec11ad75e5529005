"""Transformer text tower: token ids [B, L] int32 (0 = padding) -> features [B, width or D].

Token + learned position embeddings, pre-LN TransformerBlocks with an additive attention mask
built from the padding (and optionally causal), final LayerNorm, then pooling:
- 'eos': hidden state of the last non-padding token (the tokenizer appends EOS);
- 'cls': a learned CLS token prepended to the sequence, its output taken;
- 'mean': mean over non-padding positions.
An all-padding row yields finite features (never NaN).
"""
import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.parallel.remat import RematPolicy

POOLINGS = ("eos", "cls", "mean")


@dataclasses.dataclass(frozen=True)
class TextTowerConfig:
    """Text tower hyper-parameters; gin binds them as `text_tower_config.<field>`. mlp_dim None
    means 4 x width."""
    vocab_size: int = 32000
    max_len: int = 64
    width: int = 512
    depth: int = 6
    num_heads: int = 8
    mlp_dim: Optional[int] = None
    pooling: str = "eos"
    causal: bool = False
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self):
        L.check_transformer_config(self, "text_tower_config", POOLINGS)


@keras.saving.register_keras_serializable(package="basic_tf")
class TextTransformer(L.Tower, keras.layers.Layer):
    """token_ids [B, L<=max_len] int32 -> [B, width] or [B, output_dim]; block i uses seed
    fold_in(seed, i) and `remat_policy.wrap(fn(x), i)` (seed and mask captured)."""

    def __init__(self, config: TextTowerConfig, output_dim: Optional[int] = None,
                 remat_policy: Optional[RematPolicy] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = TextTowerConfig(**config)
        c = config
        self.token_embedding = keras.layers.Embedding(
            c.vocab_size, c.width, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="token_embedding")
        self.dropout = L.Dropout(c.dropout_rate, name="embedding_dropout")
        rates = L.drop_path_rates(c.drop_path_rate, c.depth)
        blocks = [L.TransformerBlock(c.width, c.num_heads, c.mlp_dim, c.dropout_rate,
                                     c.attention_dropout_rate, rates[i], name=f"block{i}")
                  for i in range(c.depth)]
        self._init_tower(config, output_dim, remat_policy, blocks, norm_epsilon=1e-5)

    def build(self, input_shape):
        c = self.config
        positions = c.max_len + (1 if c.pooling == "cls" else 0)
        self.position_embedding = self.add_weight(
            shape=(positions, c.width), initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="position_embedding")
        if c.pooling == "cls":
            self.cls_token = self.add_weight(shape=(c.width,), initializer="zeros", name="cls_token")
        self.token_embedding.build(input_shape)
        shape = (input_shape[0], positions, c.width)
        for block in self.blocks:
            block.build(shape)
        self._build_head(input_shape[0], c.width)

    def _attention_bias(self, valid):
        """valid [B, N] bool -> additive bias [B, 1, N, N] float32 (0 or NEG_INF)."""
        allowed = valid[:, None, None, :]
        if self.config.causal:
            n = tf.shape(valid)[1]
            causal = tf.linalg.band_part(tf.ones([n, n], tf.bool), -1, 0)
            allowed = tf.logical_and(allowed, tf.reshape(causal, [1, 1, n, n]))
        return tf.where(allowed, 0.0, L.NEG_INF)

    def hidden_states(self, token_ids, seed=None, training=False):
        """-> (final-LayerNorm states [B, N, width], valid [B, N] bool); N = L (+1 with 'cls')."""
        c = self.config
        if token_ids.shape[1] is not None and token_ids.shape[1] > c.max_len:
            raise ValueError(f"token_ids have length {token_ids.shape[1]} > "
                             f"text_tower_config.max_len={c.max_len}")
        seed = L.make_seed(seed, training, self.has_randomness)
        token_ids = tf.cast(token_ids, tf.int32)
        valid = tf.not_equal(token_ids, 0)
        x = self.token_embedding(token_ids)
        if c.pooling == "cls":
            cls = tf.broadcast_to(tf.cast(self.cls_token, x.dtype), tf.shape(x[:, :1]))
            x = tf.concat([cls, x], axis=1)
            valid = tf.concat([tf.ones_like(valid[:, :1]), valid], axis=1)
        n = tf.shape(x)[1]
        x = x + tf.expand_dims(tf.cast(self.position_embedding[:n], x.dtype), 0)
        x = self.dropout(x, L.fold_seed(seed, c.depth), training=training)
        x = self._run_blocks(x, seed, training, bias=self._attention_bias(valid))
        return self.final_norm(x), valid

    def call(self, token_ids, seed=None, training=False):
        x, valid = self.hidden_states(token_ids, seed, training=training)
        return self._project(self._pool(x, valid))

    def _pool(self, x, valid):
        """x [B, N, W], valid [B, N] -> [B, W]."""
        pooling = self.config.pooling
        if pooling == "cls":
            return x[:, 0]
        if pooling == "mean":
            weights = tf.cast(valid, x.dtype)[..., None]
            count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
            return tf.reduce_sum(x * weights, axis=1) / count
        # 'eos': the last valid position (0 for an all-padding row).
        positions = tf.expand_dims(tf.range(1, tf.shape(x)[1] + 1), 0)
        last = tf.reduce_max(tf.where(valid, positions, 0), axis=1) - 1
        return tf.gather(x, tf.maximum(last, 0), batch_dims=1)
