"""The models room's gin files (gin/models/): tiny builds and trains a step; BASIC S/M/L are
sized analytically (no allocation) against the paper's totals."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.models import (coatnet_param_count, dual_encoder_param_count,
                             text_tower_param_count)
from basic_tf.models.coatnet import PAPER_PARAMS
from models_harness import toy_batch


def _configs():
    """(dual, image, text) configs of the parsed gin files."""
    models = from_gin.model_configs()
    return models.dual, models.image, models.text


def test_tiny_builds_and_steps():
    config.parse(["models/tiny"])
    model = from_gin.dual_encoder()
    assert model.count_params() == dual_encoder_param_count(*_configs())["total"]
    c = model.text_config
    assert model.image_size == 32 and c.max_len <= 16 and c.vocab_size <= 1000
    assert c.depth <= 2 and c.width <= 64 and model.image_tower.config.num_blocks <= 2
    images, tokens = toy_batch(model, batch=8)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            image_emb, text_emb = model({"images": images, "token_ids": tokens}, training=True)
            logits = tf.matmul(image_emb, text_emb, transpose_b=True) * model.logit_scale
            labels = tf.range(8)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(0.1 * tf.convert_to_tensor(g))
        return loss

    losses = [float(step()) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("name,preset,text", [
    ("basic_s", "coatnet-0", (6, 1024)), ("basic_m", "coatnet-3", (12, 1024)),
    ("basic_l", "coatnet-7", (12, 2048))])
def test_basic_configs_by_analytic_count(name, preset, text):
    config.parse([f"models/{name}"])
    counts = dual_encoder_param_count(*_configs())
    d = gin.query_parameter("dual_encoder_config.embed_dim")
    # The image tower is the preset without its 1000-class head, plus the projection.
    assert counts["image"] == coatnet_param_count(preset, 224, num_classes=0, output_dim=d)
    assert abs(coatnet_param_count(preset, 224, 1000) / PAPER_PARAMS[preset] - 1) < 0.05
    depth = gin.query_parameter("text_tower_config.depth")
    width = gin.query_parameter("text_tower_config.width")
    assert (depth, width) == text
    assert counts["text"] == text_tower_param_count(from_gin.model_configs().text, output_dim=d)
    assert counts["total"] == counts["image"] + counts["text"] + 1
    if name == "basic_l":
        # Paper: ~3B weights; CoAtNet-7 ~2.44B so the text tower is ~0.6B. Here: 3.10B total
        # (image 2.431B, text 0.672B with a 32k vocabulary).
        assert 2.9e9 < counts["total"] < 3.2e9, counts
        assert 0.6e9 < counts["text"] < 0.7e9, counts
