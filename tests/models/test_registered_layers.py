"""Every class basic_tf.models registers with Keras goes through the harness (models_harness.py):
build, call, get_config/from_config (same numbers and attributes),
(de)serialisation or a .keras file, and a gradient step.

The classes come from Keras' registry, so a new registered layer gets a test that fails until
CASES says how to make and call it. Sizes are tiny; every argument is away from its default.
"""
import numpy as np
import pytest

from basic_tf import config, from_gin
from basic_tf.models import (CoAtNet, CoAtNetConfig, DualEncoder, DualEncoderConfig,
                             TextTowerConfig, TextTransformer, ViT, ViTConfig)
from basic_tf.models import layers as L
from basic_tf.models.coatnet import MBConvBlock, RelativeAttentionBlock
from basic_tf.parallel.remat import RematPolicy
from models_harness import LayerCase, dual_encoder_outputs, registered_classes, run_layer_test

SEED = np.array([7, 11], np.int32)
RANDOM = dict(dropout_rate=0.1, attention_dropout_rate=0.1, drop_path_rate=0.2)


def _normal(*shape):
    return lambda rng: (rng.normal(size=shape).astype(np.float32), SEED)


def _images(size):
    return lambda rng: (rng.uniform(size=(2, size, size, 3)).astype(np.float32), SEED)


def _tokens(rng):
    tokens = rng.integers(1, 20, size=(2, 6)).astype(np.int32)
    tokens[0, 4:] = 0  # padding
    return tokens, SEED


def _with_seed(layer, inputs, training):
    return layer(inputs[0], inputs[1], training=training)


def _padding_bias(rng):
    x = rng.normal(size=(2, 5, 6)).astype(np.float32)
    bias = np.zeros((2, 1, 5, 5), np.float32)
    bias[0, ..., 3:] = L.NEG_INF  # the first example's last two keys are padding
    return x, SEED, bias


def _with_seed_and_bias(layer, inputs, training):
    return layer(inputs[0], inputs[1], inputs[2], training=training)


def _tiny_dual_encoder():
    return DualEncoder(
        DualEncoderConfig(embed_dim=6, image_size=16, init_temperature=0.1, use_logit_bias=True,
                          logit_bias_init=-2.0, pixel_mean=(0.4, 0.5, 0.6),
                          pixel_std=(0.2, 0.3, 0.4)),
        CoAtNetConfig(stem_width=4, stages=(("C", 1, 8, 2), ("T", 1, 16, 2)), head_dim=8,
                      bn_momentum=0.9, **RANDOM),
        TextTowerConfig(vocab_size=20, max_len=6, width=8, depth=1, num_heads=2, mlp_dim=16,
                        pooling="mean", causal=True, **RANDOM),
        remat_policy=RematPolicy("every_block"))


def _dual_encoder_inputs(rng):
    return _images(16)(rng)[0], _tokens(rng)[0], SEED


# The classifier from gin (the stage (a) tool's way: from_gin builds its configs; the remat
# policy is train.remat, passed as an argument).
CLASSIFIER_BINDINGS = [
    "dual_encoder_config.image_tower = 'vit'", "dual_encoder_config.image_size = 8",
    "dual_encoder_config.pixel_mean = (0.1, 0.2, 0.3)",
    "dual_encoder_config.pixel_std = (0.5, 0.6, 0.7)",
    "vit_config.patch_size = 4", "vit_config.width = 8", "vit_config.depth = 1",
    "vit_config.num_heads = 2", "vit_config.mlp_dim = 16", "vit_config.pooling = 'cls'",
    "vit_config.dropout_rate = 0.1",
    "image_classifier_config.num_classes = 3", "image_classifier_config.pre_logits = False"]


def _gin_classifier():
    config.parse([], CLASSIFIER_BINDINGS)
    return from_gin.model_configs().image_classifier(RematPolicy("every_block"))


CASES = {
    "Dropout": LayerCase(lambda: L.Dropout(0.3, name="drop"), _normal(2, 4, 8), _with_seed),
    "StochasticDepth": LayerCase(lambda: L.StochasticDepth(0.5, name="path"), _normal(8, 3, 2),
                                 _with_seed),
    "BatchNorm": LayerCase(lambda: L.BatchNorm(momentum=0.9, epsilon=1e-2, name="bn"),
                           _normal(4, 3, 3, 5),
                           lambda layer, inputs, training: layer(inputs[0], training=training)),
    "MultiHeadAttention": LayerCase(lambda: L.MultiHeadAttention(8, 2, 0.2, name="attention"),
                                    lambda rng: (rng.normal(size=(2, 5, 6)).astype(np.float32),
                                                 SEED),
                                    _with_seed),
    "Mlp": LayerCase(lambda: L.Mlp(6, 12, name="mlp"), _normal(2, 5, 6),
                     lambda layer, inputs, training: layer(inputs[0])),
    "TransformerBlock": LayerCase(lambda: L.TransformerBlock(8, 2, 16, layer_norm_epsilon=1e-3,
                                                             name="block", **RANDOM),
                                  _padding_bias, _with_seed_and_bias),
    "MBConvBlock": LayerCase(lambda: MBConvBlock(8, 2, 2, 0.5, 0.2, 0.9, name="mbconv"),
                             _normal(2, 6, 6, 4), _with_seed),
    "RelativeAttentionBlock": LayerCase(
        lambda: RelativeAttentionBlock(8, 2, 4, 2, name="relative", **RANDOM),
        _normal(2, 4, 4, 4), _with_seed),
    "CoAtNet": LayerCase(
        lambda: CoAtNet(CoAtNetConfig(stem_width=4, stages=(("C", 1, 8, 2), ("T", 1, 16, 2)),
                                      head_dim=8, expansion=2, se_ratio=0.5, mlp_ratio=2,
                                      bn_momentum=0.9, **RANDOM),
                        output_dim=6, remat_policy=RematPolicy("every_k", 2), name="coatnet"),
        _images(16), _with_seed),
    "ViT": LayerCase(
        lambda: ViT(ViTConfig(patch_size=4, width=8, depth=2, num_heads=2, mlp_dim=16,
                              pooling="cls", **RANDOM),
                    output_dim=6, remat_policy=RematPolicy("every_block"), name="vit"),
        _images(8), _with_seed),
    "TextTransformer": LayerCase(
        lambda: TextTransformer(TextTowerConfig(vocab_size=20, max_len=6, width=8, depth=1,
                                                num_heads=2, mlp_dim=16, pooling="cls",
                                                causal=True, **RANDOM),
                                output_dim=6, remat_policy=RematPolicy("every_block"),
                                name="text"),
        _tokens, _with_seed),
    "DualEncoder": LayerCase(_tiny_dual_encoder, _dual_encoder_inputs, dual_encoder_outputs,
                             keras_file=True),
    "ImageClassifier": LayerCase(
        _gin_classifier, _images(8),
        lambda model, inputs, training: model(inputs[0], training=training, seed=inputs[1]),
        keras_file=True),
}


@pytest.mark.parametrize("name", sorted(registered_classes()))
def test_registered_class_goes_through_the_harness(name):
    if name not in CASES:
        pytest.fail(f"{name} is registered with Keras (package 'basic_tf') but has no LayerCase "
                    f"in {__file__}: add how to make and call it")
    run_layer_test(CASES[name])


def test_every_case_is_a_registered_class():
    assert sorted(CASES) == sorted(registered_classes())
