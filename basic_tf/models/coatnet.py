"""CoAtNet image tower (Dai et al. 2021, "CoAtNet: Marrying Convolution and Attention").

Layout: S0 conv stem (two 3x3 convs, the first stride 2), then stages of MBConv ('C') or
relative-attention Transformer ('T') blocks; each stage's first block may downsample (stride 2).
Output: global average pool -> LayerNorm -> [B, C] features (-> optional linear projection).

Block details (chosen so the parameter counts reproduce the paper's Table 3 to < 2.5%):
- MBConv, pre-norm: x + DropPath(Proj(SE(DW3x3(Expand(BN(x)))))), expansion 4 x output width,
  squeeze-excitation width = 0.25 x block input width; downsampling block: depthwise stride 2
  and the shortcut is AvgPool(2) -> 1x1 projection.
- Transformer: the stage entry pools x (MaxPool 3, stride 2) before a pre-LN TransformerBlock
  whose attention carries a learned 2-D relative-position bias ((2H-1)(2W-1) per head); its
  shortcut is a linear projection when the width changes. Head dim 32 by default.
"""
import dataclasses
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from basic_tf.models import layers as L
from basic_tf.models import mesh_ops
from basic_tf.parallel.remat import RematPolicy

# Stage = (block type 'C' (MBConv) or 'T' (Transformer), depth, width, stride of its first block).
# Depths and widths from the CoAtNet paper, Table 3. CoAtNet-6/7 split S3 into 8 MBConv blocks
# followed by 42 Transformer blocks at stride 1. CoAtNet-6's S4 width 3072 reproduces the paper's
# 1.47B parameters (with 2048 the model has 1.35B).
PRESETS = {
    "coatnet-0": dict(stem_width=64, stages=(("C", 2, 96, 2), ("C", 3, 192, 2),
                                             ("T", 5, 384, 2), ("T", 2, 768, 2))),
    "coatnet-1": dict(stem_width=64, stages=(("C", 2, 96, 2), ("C", 6, 192, 2),
                                             ("T", 14, 384, 2), ("T", 2, 768, 2))),
    "coatnet-2": dict(stem_width=128, stages=(("C", 2, 128, 2), ("C", 6, 256, 2),
                                              ("T", 14, 512, 2), ("T", 2, 1024, 2))),
    "coatnet-3": dict(stem_width=192, stages=(("C", 2, 192, 2), ("C", 6, 384, 2),
                                              ("T", 14, 768, 2), ("T", 2, 1536, 2))),
    "coatnet-4": dict(stem_width=192, stages=(("C", 2, 192, 2), ("C", 12, 384, 2),
                                              ("T", 28, 768, 2), ("T", 2, 1536, 2))),
    "coatnet-5": dict(stem_width=192, stages=(("C", 2, 256, 2), ("C", 12, 512, 2),
                                              ("T", 28, 1280, 2), ("T", 2, 2048, 2)),
                      head_dim=64),
    "coatnet-6": dict(stem_width=192, stages=(("C", 2, 192, 2), ("C", 4, 384, 2),
                                              ("C", 8, 768, 2), ("T", 42, 1536, 1),
                                              ("T", 2, 3072, 2)), head_dim=128),
    "coatnet-7": dict(stem_width=192, stages=(("C", 2, 256, 2), ("C", 4, 512, 2),
                                              ("C", 8, 1024, 2), ("T", 42, 2048, 1),
                                              ("T", 2, 3072, 2)), head_dim=128),
}
# Paper parameter counts (224x224, 1000-class head), for tests and docs.
PAPER_PARAMS = {"coatnet-0": 25e6, "coatnet-1": 42e6, "coatnet-2": 75e6, "coatnet-3": 168e6,
                "coatnet-4": 275e6, "coatnet-5": 688e6, "coatnet-6": 1.47e9, "coatnet-7": 2.44e9}


@dataclasses.dataclass(frozen=True)
class CoAtNetConfig:
    """CoAtNet hyper-parameters; gin binds them as `coatnet_config.<field>`.

    `preset` ('coatnet-0'..'coatnet-7', or None) supplies stem_width, stages and head_dim where
    those are None; with preset=None, stem_width and stages must be given. stages: tuple of
    (type 'C' MBConv or 'T' Transformer, depth, width, stride of its first block).
    """
    preset: Optional[str] = "coatnet-0"
    stem_width: Optional[int] = None
    stages: Optional[tuple] = None
    head_dim: Optional[int] = None
    expansion: int = 4
    se_ratio: float = 0.25
    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    bn_momentum: float = 0.99

    def __post_init__(self):
        base = {"head_dim": 32}
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"coatnet_config.preset={self.preset!r} is not one of "
                                 f"{sorted(PRESETS)} (or None with stem_width and stages)")
            base.update(PRESETS[self.preset])
        for name in ("stem_width", "stages", "head_dim"):
            if getattr(self, name) is None:
                if name not in base:
                    raise ValueError(f"coatnet_config.{name}=None: with preset=None both "
                                     f"stem_width and stages are needed")
                object.__setattr__(self, name, base[name])
        stages = tuple(tuple(s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        for i, stage in enumerate(stages):
            if len(stage) != 4 or stage[0] not in ("C", "T") or stage[1] < 1 or stage[3] not in (1, 2):
                raise ValueError(f"coatnet_config.stages[{i}]={stage!r}: expected (type 'C' or 'T', "
                                 f"depth >= 1, width, stride 1 or 2)")
            if stage[0] == "T" and stage[2] % self.head_dim:
                raise ValueError(f"coatnet_config.stages[{i}] width {stage[2]} is not a multiple of "
                                 f"head_dim={self.head_dim}")

    @property
    def num_blocks(self) -> int:
        return sum(s[1] for s in self.stages)

    @property
    def width(self) -> int:
        return self.stages[-1][2]


def preset_config(preset: str, **overrides) -> CoAtNetConfig:
    """The paper's CoAtNet preset ('coatnet-0'..'coatnet-7'), independent of gin bindings."""
    return CoAtNetConfig(preset=preset, **overrides)


def downsampled(size: int, stride: int) -> int:
    """A map side after a 'SAME'-padded conv or pool of this stride: ceil(size / stride)."""
    return -(-size // stride)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of the CoAtNet layout: what CoAtNet builds, param_count counts, the planner costs.

    Sizes are feature-map (height, width); None when the walk was given no image size.
    """
    index: int                 # 0..num_blocks-1 over all stages (seed, drop-path, remat index)
    name: str                  # 'stage{s}_block{j}', stages from 1
    kind: str                  # 'C' MBConv or 'T' relative-attention Transformer
    in_width: int              # channels in: the stem width or the previous block's width
    width: int                 # channels out
    stride: int                # 1, or the stage's stride at its first block
    in_size: Optional[tuple]   # the map the block reads
    size: Optional[tuple]      # the map it writes: in_size downsampled by stride


def block_specs(config: CoAtNetConfig, image_size=None) -> list:
    """The blocks of `config` in order, after the stem (two convs, the first stride 2).

    image_size: the images' side (int) or (height, width): block 0 reads the stem's map,
    ceil(side / 2), and every block's stride divides it further ('SAME' padding). None: no sizes.
    """
    size = None
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        size = (downsampled(h, 2), downsampled(w, 2))
    specs, in_width = [], config.stem_width
    for s, (kind, depth, width, stride) in enumerate(config.stages):
        for j in range(depth):
            block_stride = stride if j == 0 else 1
            out = None if size is None else tuple(downsampled(n, block_stride) for n in size)
            specs.append(BlockSpec(len(specs), f"stage{s + 1}_block{j}", kind, in_width, width,
                                   block_stride, size, out))
            size, in_width = out, width
    return specs


@keras.saving.register_keras_serializable(package="basic_tf")
class MBConvBlock(keras.layers.Layer):
    """Pre-norm MBConv with squeeze-excitation: [B, H, W, Cin] -> [B, H/s, W/s, width]."""

    def __init__(self, width: int, stride: int, expansion: int, se_ratio: float,
                 drop_path_rate: float, bn_momentum: float, **kwargs):
        super().__init__(**kwargs)
        self.width, self.stride, self.expansion, self.se_ratio = width, stride, expansion, se_ratio
        self.drop_path_rate, self.bn_momentum = drop_path_rate, bn_momentum
        hidden = width * expansion
        self.hidden = hidden
        self.norm = L.BatchNorm(bn_momentum, name="norm")
        self.expand = keras.layers.Dense(hidden, use_bias=False, name="expand")
        self.bn1 = L.BatchNorm(bn_momentum, name="bn1")
        self.depthwise = keras.layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False,
                                                      name="depthwise")
        self.bn2 = L.BatchNorm(bn_momentum, name="bn2")
        self.se_reduce = self.se_expand = self.shortcut = None
        self.project = keras.layers.Dense(width, name="project")
        self.drop_path = L.StochasticDepth(drop_path_rate, name="drop_path")

    def build(self, input_shape):
        b, h, w, cin = input_shape
        self.norm.build(input_shape)
        self.expand.build(input_shape)
        hidden_shape = (b, h, w, self.hidden)
        self.bn1.build(hidden_shape)
        self.depthwise.build(hidden_shape)
        out_hw = (downsampled(h, self.stride) if h else None,
                  downsampled(w, self.stride) if w else None)
        self.bn2.build(hidden_shape)
        se_width = max(1, int(cin * self.se_ratio))
        self.se_reduce = keras.layers.Dense(se_width, activation="gelu", name="se_reduce")
        self.se_expand = keras.layers.Dense(self.hidden, activation="sigmoid", name="se_expand")
        self.se_reduce.build((b, self.hidden))
        self.se_expand.build((b, se_width))
        self.project.build((b,) + out_hw + (self.hidden,))
        if self.stride > 1 or cin != self.width:
            self.shortcut = keras.layers.Dense(self.width, name="shortcut")
            self.shortcut.build((b,) + out_hw + (cin,))

    def call(self, x, seed, training=False):
        shortcut = x
        if self.stride > 1:
            shortcut = mesh_ops.avg_pool2d(shortcut, 2, self.stride)
        if self.shortcut is not None:
            shortcut = self.shortcut(shortcut)
        y = self.norm(x, training=training)
        y = keras.activations.gelu(self.bn1(self.expand(y), training=training))
        y = keras.activations.gelu(self.bn2(mesh_ops.depthwise(self.depthwise, y),
                                             training=training))
        gate = self.se_expand(self.se_reduce(tf.reduce_mean(y, axis=[1, 2])))
        y = self.project(y * gate[:, None, None, :])
        return shortcut + self.drop_path(y, L.fold_seed(seed, 0), training=training)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "stride": self.stride,
                "expansion": self.expansion, "se_ratio": self.se_ratio,
                "drop_path_rate": self.drop_path_rate, "bn_momentum": self.bn_momentum}


def relative_position_index(height: int, width: int) -> np.ndarray:
    """[HW, HW] int32: index into a (2H-1)(2W-1) table of the 2-D offset from key to query."""
    coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1)
    coords = coords.reshape(-1, 2)
    delta = coords[:, None, :] - coords[None, :, :] + np.array([height - 1, width - 1])
    return (delta[..., 0] * (2 * width - 1) + delta[..., 1]).astype(np.int32)


@keras.saving.register_keras_serializable(package="basic_tf")
class RelativeAttentionBlock(keras.layers.Layer):
    """CoAtNet Transformer block on a feature map: [B, H, W, Cin] -> [B, H/s, W/s, width].

    The relative-position bias table is sized for the feature map the layer is built for.
    """

    def __init__(self, width: int, stride: int, head_dim: int, mlp_ratio: int, dropout_rate: float,
                 attention_dropout_rate: float, drop_path_rate: float, **kwargs):
        super().__init__(**kwargs)
        self.width, self.stride, self.head_dim, self.mlp_ratio = width, stride, head_dim, mlp_ratio
        self.dropout_rate, self.attention_dropout_rate = dropout_rate, attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.num_heads = width // head_dim
        self.block = L.TransformerBlock(width, self.num_heads, mlp_ratio * width, dropout_rate,
                                        attention_dropout_rate, drop_path_rate, name="transformer")

    def build(self, input_shape):
        b, h, w, cin = input_shape
        if h is None or w is None:
            raise ValueError("CoAtNet relative attention needs a static feature-map size; build "
                             "the tower for a fixed image_size")
        self.grid = (downsampled(h, self.stride), downsampled(w, self.stride))
        gh, gw = self.grid
        self.relative_table = self.add_weight(
            shape=((2 * gh - 1) * (2 * gw - 1), self.num_heads), initializer="zeros",
            name="relative_bias_table")
        self._index = relative_position_index(gh, gw)
        self.block.build((b, gh * gw, cin))

    def relative_bias(self):
        """[heads, N, N] learned bias for the built grid."""
        bias = tf.gather(tf.convert_to_tensor(self.relative_table), self._index)  # [N, N, heads]
        return tf.transpose(bias, [2, 0, 1])

    def call(self, x, seed, training=False):
        if self.stride > 1:
            x = mesh_ops.max_pool2d(x, 3, self.stride)
        gh, gw = self.grid
        if x.shape[1] != gh or x.shape[2] != gw:
            raise ValueError(f"RelativeAttentionBlock {self.name} was built for a {gh}x{gw} grid "
                             f"(after pooling) but got {x.shape[1]}x{x.shape[2]}")
        tokens = tf.reshape(x, [-1, gh * gw, x.shape[-1]])
        y = self.block(tokens, seed, tf.expand_dims(self.relative_bias(), 0), training=training)
        return tf.reshape(y, [-1, gh, gw, self.width])

    def get_config(self):
        return {**super().get_config(), "width": self.width, "stride": self.stride,
                "head_dim": self.head_dim, "mlp_ratio": self.mlp_ratio,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate}


@keras.saving.register_keras_serializable(package="basic_tf")
class CoAtNet(L.Tower, keras.layers.Layer):
    """images [B, H, W, 3] (already normalised) -> features [B, width] or [B, output_dim].

    Blocks are numbered 0..num_blocks-1 over all stages: block i uses seed fold_in(seed, i),
    drop-path rate rising linearly to `drop_path_rate`, and `remat_policy.wrap(fn(x), i)` (seed captured).
    """

    def __init__(self, config: CoAtNetConfig, output_dim: Optional[int] = None,
                 remat_policy: Optional[RematPolicy] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = CoAtNetConfig(**config)
        c = config
        self.stem1 = keras.layers.Conv2D(c.stem_width, 3, 2, padding="same", name="stem_conv1")
        self.stem_bn = L.BatchNorm(c.bn_momentum, name="stem_bn")
        self.stem2 = keras.layers.Conv2D(c.stem_width, 3, 1, padding="same", name="stem_conv2")
        rates = L.drop_path_rates(c.drop_path_rate, c.num_blocks)
        blocks = []
        for spec in block_specs(c):
            if spec.kind == "C":
                block = MBConvBlock(spec.width, spec.stride, c.expansion, c.se_ratio,
                                    rates[spec.index], c.bn_momentum, name=spec.name)
            else:
                block = RelativeAttentionBlock(spec.width, spec.stride, c.head_dim, c.mlp_ratio,
                                               c.dropout_rate, c.attention_dropout_rate,
                                               rates[spec.index], name=spec.name)
            blocks.append(block)
        self._init_tower(config, output_dim, remat_policy, blocks, norm_epsilon=1e-5)

    def build(self, input_shape):
        b, h, w, _ = input_shape
        self.stem1.build(input_shape)
        specs = block_specs(self.config, (h, w))
        stem_shape = (b, *specs[0].in_size, self.config.stem_width)
        self.stem_bn.build(stem_shape)
        self.stem2.build(stem_shape)
        for block, spec in zip(self.blocks, specs):
            block.build((b, *spec.in_size, spec.in_width))
        self._build_head(b, self.config.width)

    def call(self, images, seed=None, training=False):
        seed = L.make_seed(seed, training, self.has_randomness)
        x = self.stem1(images)
        x = self.stem2(keras.activations.gelu(self.stem_bn(x, training=training)))
        x = self._run_blocks(x, seed, training)
        return self._project(self.final_norm(tf.reduce_mean(x, axis=[1, 2])))
