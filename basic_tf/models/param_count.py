"""Analytic parameter counts (no variables allocated), equal to the built models' count_params().

Counts include every weight, BatchNorm moving statistics too (they change CoAtNet totals by
< 0.1%). Used to check presets against the papers and to size gin configs such as BASIC-L
(3B parameters) without allocating them.
"""
from typing import Optional, Union

from basic_tf.models.coatnet import PRESETS, CoAtNetConfig, block_specs, preset_config
from basic_tf.models.text import TextTowerConfig
from basic_tf.models.vit import ViTConfig


def _dense(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _batch_norm(c: int) -> int:
    return 4 * c  # gamma, beta, moving mean, moving variance


def _layer_norm(c: int) -> int:
    return 2 * c


def transformer_block_params(cin: int, width: int, mlp_dim: int) -> int:
    """basic_tf.models.layers.TransformerBlock with input width cin."""
    return (_layer_norm(cin) + _dense(cin, 3 * width) + _dense(width, width) + _layer_norm(width)
            + _dense(width, mlp_dim) + _dense(mlp_dim, width)
            + (_dense(cin, width) if cin != width else 0))


def _mbconv_params(cin: int, width: int, stride: int, cfg: CoAtNetConfig) -> int:
    hidden = width * cfg.expansion
    se = max(1, int(cin * cfg.se_ratio))
    return (_batch_norm(cin) + _dense(cin, hidden, bias=False) + _batch_norm(hidden) + 9 * hidden
            + _batch_norm(hidden) + _dense(hidden, se) + _dense(se, hidden) + _dense(hidden, width)
            + (_dense(cin, width) if stride > 1 or cin != width else 0))


def _classifier_head(width: int, num_classes: int, pre_logits: bool) -> int:
    if not num_classes:
        return 0
    return (_dense(width, width) if pre_logits else 0) + _dense(width, num_classes)


def coatnet_param_count(preset: Union[str, CoAtNetConfig], image_size: int = 224,
                        num_classes: int = 1000, pre_logits: bool = True,
                        output_dim: Optional[int] = None) -> int:
    """Parameters of a CoAtNet tower (a preset name or config) at image_size x image_size.

    num_classes > 0 adds the classification head as the CoAtNet paper counts it (a tanh
    pre-logits layer of the final width, then logits): ImageClassifier's head.
    output_dim adds the dual encoder's projection (no bias).
    """
    cfg = preset_config(preset) if isinstance(preset, str) else preset
    c0 = cfg.stem_width
    total = _dense(27, c0) + _batch_norm(c0) + _dense(9 * c0, c0)
    for b in block_specs(cfg, image_size):
        if b.kind == "C":
            total += _mbconv_params(b.in_width, b.width, b.stride, cfg)
        else:
            (gh, gw), heads = b.size, b.width // cfg.head_dim
            total += (2 * gh - 1) * (2 * gw - 1) * heads   # relative-position bias table
            total += transformer_block_params(b.in_width, b.width, cfg.mlp_ratio * b.width)
    total += _layer_norm(cfg.width)
    total += _dense(cfg.width, output_dim, bias=False) if output_dim else 0
    return total + _classifier_head(cfg.width, num_classes, pre_logits)


def vit_param_count(config: ViTConfig, image_size: int = 224,
                    num_classes: int = 0, pre_logits: bool = True,
                    output_dim: Optional[int] = None) -> int:
    """Parameters of a ViT tower."""
    cfg = config
    w = cfg.width
    tokens = (image_size // cfg.patch_size) ** 2 + (1 if cfg.pooling == "cls" else 0)
    total = _dense(cfg.patch_size ** 2 * 3, w) + tokens * w + (w if cfg.pooling == "cls" else 0)
    total += cfg.depth * transformer_block_params(w, w, cfg.mlp_dim) + _layer_norm(w)
    total += _dense(w, output_dim, bias=False) if output_dim else 0
    return total + _classifier_head(w, num_classes, pre_logits)


def text_tower_param_count(config: TextTowerConfig,
                           output_dim: Optional[int] = None) -> int:
    """Parameters of the text tower."""
    cfg = config
    w = cfg.width
    cls = cfg.pooling == "cls"
    total = cfg.vocab_size * w + (cfg.max_len + cls) * w + (w if cls else 0)
    total += cfg.depth * transformer_block_params(w, w, cfg.mlp_dim) + _layer_norm(w)
    return total + (_dense(w, output_dim, bias=False) if output_dim else 0)


def dual_encoder_param_count(dual_config, image_config, text_config) -> dict:
    """{'image', 'text', 'head', 'total'} for DualEncoder(dual_config, image_config, text_config).

    'image' and 'text' include each tower's projection; 'head' is the logit scale (and bias).
    """
    d = dual_config
    if d.image_tower == "coatnet":
        image = coatnet_param_count(image_config, d.image_size, num_classes=0,
                                    output_dim=d.embed_dim)
    else:
        image = vit_param_count(image_config, d.image_size, num_classes=0, output_dim=d.embed_dim)
    text = text_tower_param_count(text_config, output_dim=d.embed_dim)
    head = 1 + int(d.use_logit_bias)
    return {"image": image, "text": text, "head": head, "total": image + text + head}


__all__ = ["coatnet_param_count", "vit_param_count", "text_tower_param_count",
           "dual_encoder_param_count", "transformer_block_params", "PRESETS"]
