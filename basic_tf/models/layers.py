"""Building blocks shared by every tower: stateless randomness, BatchNorm, attention, MLP.

Randomness is stateless (seeded): BASIC's accumulation runs each micro-batch forward twice and
recompute (remat) runs blocks again, and every run must draw the same dropout / stochastic-depth
masks. Each random layer takes an int32 [2] seed; a block derives its layers' seeds with
`stateless_fold_in(block_seed, k)`. The same seed gives the same masks eager, in tf.function and
under XLA (jit_compile=True).
"""
import dataclasses
import math
from typing import Callable, Optional

import keras
import tensorflow as tf

from basic_tf.parallel.remat import RematPolicy
from basic_tf.trace_flag import TraceFlag

RNG_ALG = "philox"  # for seed folding (identical eager, in graphs and under XLA)
NEG_INF = -1e9  # additive attention bias for masked keys; finite so all-masked rows give no NaN


def fold_seed(seed: tf.Tensor, index: int) -> tf.Tensor:
    """int32 [2] seed for sub-part `index` of whatever `seed` belongs to."""
    return tf.random.experimental.stateless_fold_in(seed, index, alg=RNG_ALG)


def make_seed(seed: Optional[tf.Tensor], training: bool, has_randomness: bool) -> tf.Tensor:
    """The tower seed: the given one, a fresh random one (training with randomness, no seed), or
    zeros (nothing random will use it). Always a tensor, since remat-wrapped blocks take tensors."""
    if seed is not None:
        return tf.reshape(tf.cast(seed, tf.int32), [2])
    if training and has_randomness:
        return tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int32)
    return tf.zeros([2], tf.int32)


def _mix32(h: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijective avalanche mix of uint32 values."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
    h = h * tf.constant(0x85EBCA6B, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13))
    h = h * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def stateless_uniform(shape, seed: tf.Tensor) -> tf.Tensor:
    """float32 uniform [0, 1) of `shape`, a pure function of (seed int32 [2], element index).

    Integer hashing instead of tf.random.stateless_uniform, whose XLA kernel draws other numbers
    than the TF kernel for the same seed: masks must be the same eager, in graphs and compiled.
    """
    seed = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
    key = _mix32(tf.bitwise.bitwise_xor(seed[0], _mix32(seed[1] + tf.constant(0x9E3779B9, tf.uint32))))
    index = tf.cast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    bits = _mix32(_mix32(tf.bitwise.bitwise_xor(index, key)) + key)
    uniform = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))
    return tf.reshape(uniform, shape)


@keras.saving.register_keras_serializable(package="basic_tf")
class Dropout(keras.layers.Layer):
    """Stateless dropout: same seed and input give the same mask (replayable)."""

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{type(self).__name__} rate={rate} must be in [0, 1)")
        self.rate = rate

    def mask_shape(self, x: tf.Tensor) -> tf.Tensor:
        """Shape of the keep mask, broadcast over x: one draw per element."""
        return tf.shape(x)

    def call(self, x, seed, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = stateless_uniform(self.mask_shape(x), seed) >= self.rate
        return tf.where(keep, x / tf.cast(1.0 - self.rate, x.dtype), tf.zeros_like(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@keras.saving.register_keras_serializable(package="basic_tf")
class StochasticDepth(Dropout):
    """Stateless per-example residual-branch drop (drop path): x [B, ...] -> x or 0, rescaled."""

    def mask_shape(self, x: tf.Tensor) -> tf.Tensor:
        """[B, 1, ..., 1]: one draw per example."""
        return tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)


_STATISTICS_FROZEN = TraceFlag()


def no_moving_stat_updates():
    """Inside (read at trace time), training-mode BatchNorm uses batch statistics as usual but
    does not update its moving mean/variance. BASIC's second (backprop) pass and remat
    recomputation run under it, so moving averages are updated once per micro-batch."""
    return _STATISTICS_FROZEN.on()


def moving_stat_updates_enabled() -> bool:
    return not _STATISTICS_FROZEN.is_on()


@keras.saving.register_keras_serializable(package="basic_tf")
class BatchNorm(keras.layers.Layer):
    """BatchNorm over all but the last axis, statistics in float32.

    Each replica normalises over its own (micro-)batch (not synchronized). The moving statistics
    are on-read-synchronized variables: each replica updates its own copy without cross-replica
    communication (legal inside the accumulation's while loops), and reads outside the replica
    context (checkpoints, export) see the replicas' mean.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        stat = dict(shape=(c,), dtype="float32", trainable=False, autocast=False,
                    synchronization="on_read", aggregation="mean")
        self.moving_mean = keras.Variable(initializer="zeros", name="moving_mean", **stat)
        self.moving_variance = keras.Variable(initializer="ones", name="moving_variance", **stat)

    def call(self, x, training=False):
        x32 = tf.cast(x, tf.float32)
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, variance = tf.nn.moments(x32, axes)
            if moving_stat_updates_enabled():
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)
        y = tf.nn.batch_normalization(x32, mean, variance, tf.cast(self.beta, tf.float32),
                                      tf.cast(self.gamma, tf.float32), self.epsilon)
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def remat_block(policy, fn: Callable, block_index: int) -> Callable:
    """`policy.wrap(fn, block_index)`, where every call of `fn` after the first (the recompute
    during back-propagation) runs under `no_moving_stat_updates()`. Make a new one per tower call.
    """
    calls = [0]

    def once_updating(*args):
        calls[0] += 1
        if calls[0] == 1:
            return fn(*args)
        with no_moving_stat_updates():
            return fn(*args)

    return policy.wrap(once_updating, block_index)


@keras.saving.register_keras_serializable(package="basic_tf")
class MultiHeadAttention(keras.layers.Layer):
    """Self-attention with einsums (XLA-friendly), softmax in float32.

    x [B, N, Cin] -> [B, N, width]; `bias` is additive to the logits, broadcastable to
    [B, heads, N, N] (relative-position bias, padding or causal mask).
    """

    def __init__(self, width: int, num_heads: int, dropout_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if width % num_heads:
            raise ValueError(f"attention width={width} is not divisible by num_heads={num_heads}")
        self.width, self.num_heads, self.dropout_rate = width, num_heads, dropout_rate
        self.head_dim = width // num_heads
        self.qkv = keras.layers.Dense(3 * width, name="qkv")
        self.out = keras.layers.Dense(width, name="out")
        self.dropout = Dropout(dropout_rate, name="attention_dropout")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.width,))

    def call(self, x, seed, bias=None, training=False):
        qkv = self.qkv(x)
        # q, k, v as slices of the fused features, not tf.unstack of a [B, N, 3, h, d] reshape:
        # on a DTensor mesh whose model axis divides the heads, DTensor's expansion of Unpack
        # gives its outputs the wrong shape ("op output inconsistent with the provided layout"),
        # and it refuses tf.split of the model-sharded feature axis. Same values either way.
        shape = tf.concat([tf.shape(x)[:2], [self.num_heads, self.head_dim]], axis=0)
        w = self.width
        q, k, v = (tf.reshape(qkv[..., i * w:(i + 1) * w], shape) for i in range(3))  # [B,N,h,d]
        logits = tf.einsum("bqhd,bkhd->bhqk", q, k) * tf.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        logits = tf.cast(logits, tf.float32)
        if bias is not None:
            logits += tf.cast(bias, tf.float32)
        weights = tf.cast(tf.nn.softmax(logits, axis=-1), v.dtype)
        weights = self.dropout(weights, seed, training=training)
        y = tf.einsum("bhqk,bkhd->bqhd", weights, v)
        y = tf.reshape(y, tf.concat([tf.shape(x)[:2], [self.width]], axis=0))
        return self.out(y)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "num_heads": self.num_heads,
                "dropout_rate": self.dropout_rate}


@keras.saving.register_keras_serializable(package="basic_tf")
class Mlp(keras.layers.Layer):
    """Dense(hidden, GELU) -> Dense(width): [..., width] -> [..., width]."""

    def __init__(self, width: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.width, self.hidden = width, hidden
        self.fc1 = keras.layers.Dense(hidden, activation="gelu", name="fc1")
        self.fc2 = keras.layers.Dense(width, name="fc2")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden,))

    def call(self, x):
        return self.fc2(self.fc1(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "hidden": self.hidden}


def check_transformer_config(config, gin_name: str, poolings: tuple) -> None:
    """Shared __post_init__ of the Transformer tower configs (text, ViT): mlp_dim None means
    4 x width; pooling one of `poolings`; width divisible by num_heads. Errors name
    `<gin_name>.<field>` and the value."""
    if config.mlp_dim is None:
        object.__setattr__(config, "mlp_dim", 4 * config.width)
    if config.pooling not in poolings:
        raise ValueError(f"{gin_name}.pooling={config.pooling!r} is not one of {poolings}")
    if config.width % config.num_heads:
        raise ValueError(f"{gin_name}.width={config.width} is not divisible by "
                         f"num_heads={config.num_heads}")


@keras.saving.register_keras_serializable(package="basic_tf")
class TransformerBlock(keras.layers.Layer):
    """Pre-LN block shared by the ViT, text and CoAtNet towers.

    x [B, N, Cin] -> [B, N, width]. When Cin != width (CoAtNet stage entry) the shortcut is a
    linear projection. Dropout on attention weights and on each branch output; stochastic depth
    on each branch. Seeds: 0 attention dropout, 1/3 branch dropout, 2/4 drop path.
    """

    def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout_rate: float = 0.0,
                 attention_dropout_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_norm_epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.width, self.num_heads, self.mlp_dim = width, num_heads, mlp_dim
        self.dropout_rate, self.attention_dropout_rate = dropout_rate, attention_dropout_rate
        self.drop_path_rate, self.layer_norm_epsilon = drop_path_rate, layer_norm_epsilon
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm1")
        self.attention = MultiHeadAttention(width, num_heads, attention_dropout_rate, name="attention")
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm2")
        self.mlp = Mlp(width, mlp_dim, name="mlp")
        self.dropout = Dropout(dropout_rate, name="dropout")
        self.drop_path = StochasticDepth(drop_path_rate, name="drop_path")
        self.shortcut = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        out_shape = input_shape[:-1] + (self.width,)
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(out_shape)
        self.mlp.build(out_shape)
        if input_shape[-1] != self.width:
            self.shortcut = keras.layers.Dense(self.width, name="shortcut")
            self.shortcut.build(input_shape)

    def call(self, x, seed, bias=None, training=False):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = self.attention(self.norm1(x), fold_seed(seed, 0), bias, training=training)
        y = self.dropout(y, fold_seed(seed, 1), training=training)
        x = shortcut + self.drop_path(y, fold_seed(seed, 2), training=training)
        y = self.dropout(self.mlp(self.norm2(x)), fold_seed(seed, 3), training=training)
        return x + self.drop_path(y, fold_seed(seed, 4), training=training)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim, "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon}


class Tower:
    """Mixin of the three towers (CoAtNet, ViT, text Transformer): what they share.

    - `config` (a dataclass with dropout_rate, attention_dropout_rate, drop_path_rate),
      `output_dim`, `remat_policy` (a RematPolicy, or its dict from get_config); `get_config`
      serialises all three.
    - Blocks stored as named attributes (`block_0`, ...), exposed as `self.blocks`: Keras 3 keeps
      a list attribute of layers as its own TrackedList, which tf.train.Checkpoint does not
      follow, so blocks held in a list would be silently missing from checkpoints.
    - `_run_blocks`: block i gets seed fold_in(seed, i) and is wrapped by `remat_policy` (i).
    - The head: `final_norm` (LayerNorm) then an optional bias-free `projection` to output_dim.
    """

    def _init_tower(self, config, output_dim, remat_policy, blocks, norm_epsilon: float):
        self.config, self.output_dim = config, output_dim
        if isinstance(remat_policy, dict):
            remat_policy = RematPolicy(**remat_policy)
        self.remat_policy = remat_policy or RematPolicy()
        self._num_blocks = len(blocks)
        for i, block in enumerate(blocks):
            setattr(self, f"block_{i}", block)
        self.final_norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="final_norm")
        self.projection = (None if output_dim is None else
                           keras.layers.Dense(output_dim, use_bias=False, name="projection"))

    @property
    def blocks(self) -> list:
        return [getattr(self, f"block_{i}") for i in range(self._num_blocks)]

    @property
    def has_randomness(self) -> bool:
        c = self.config
        return max(c.dropout_rate, c.attention_dropout_rate, c.drop_path_rate) > 0

    def _run_blocks(self, x, seed, training, **block_kwargs):
        for i, block in enumerate(self.blocks):
            block_seed = fold_seed(seed, i)  # captured: remat wraps float tensors only
            fn = lambda x, block=block, s=block_seed: block(x, s, training=training,
                                                            **block_kwargs)
            x = remat_block(self.remat_policy, fn, i)(x)
        return x

    def _build_head(self, batch, width: int) -> None:
        self.final_norm.build((batch, width))
        if self.projection is not None:
            self.projection.build((batch, width))

    def _project(self, features):
        return features if self.projection is None else self.projection(features)

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config),
                "output_dim": self.output_dim,
                "remat_policy": dataclasses.asdict(self.remat_policy)}


def drop_path_rates(max_rate: float, num_blocks: int) -> list:
    """Stochastic-depth rate per block, rising linearly from 0 to `max_rate` (last block)."""
    if num_blocks <= 1:
        return [max_rate] * num_blocks
    return [max_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def normalize_pixels(images: tf.Tensor, mean, std) -> tf.Tensor:
    """images [B, H, W, 3] in [0, 1] -> float32 (images - mean) / std per channel."""
    return (tf.cast(images, tf.float32) - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """[B, D] -> float32 unit rows (a zero row stays zero, never NaN)."""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1, epsilon=1e-12)
