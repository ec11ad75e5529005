"""One harness every DualEncoder configuration goes through (keras-hub `run_backbone_test` style):
build -> call -> shapes and unit norm -> get_config/from_config + set_weights -> same numbers."""
import tempfile

import numpy as np
import tensorflow as tf

from basic_tf import config
from basic_tf.models import DualEncoder


def tiny_model(bindings=(), **overrides):
    """DualEncoder from gin/models/tiny.gin plus extra bindings."""
    config.parse(["models/tiny"], list(bindings))
    return DualEncoder(**overrides)


def toy_batch(model, batch=4, seed=0):
    """float32 images [B, S, S, 3] in [0, 1], int32 tokens [B, L] with trailing padding."""
    rng = np.random.default_rng(seed)
    size, seq = model.image_size, model.max_text_len
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    tokens = rng.integers(1, model.text_config.vocab_size, size=(batch, seq)).astype(np.int32)
    lengths = rng.integers(1, seq + 1, size=batch)
    tokens[np.arange(seq)[None] >= lengths[:, None]] = 0
    return images, tokens


def run_dual_encoder_test(model):
    """Checks the public contract on `model` and returns its embeddings."""
    images, tokens = toy_batch(model)
    image_emb, text_emb = model({"images": images, "token_ids": tokens})
    d = model.embed_dim
    assert image_emb.shape == (4, d) and text_emb.shape == (4, d)
    assert image_emb.dtype == tf.float32 and text_emb.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(image_emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.encode_image(images), image_emb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.encode_text(tokens), text_emb, rtol=1e-6, atol=1e-6)

    # Variable groups: disjoint, union = trainable_variables.
    groups = [model.image_trainable_variables, model.text_trainable_variables,
              model.head_trainable_variables]
    ids = [id(v) for g in groups for v in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(v) for v in model.trainable_variables}
    assert all(groups[:2]) and groups[2]

    # tf.train.Checkpoint (used for training checkpoints) sees every weight.
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=model).write(tmp + "/ckpt")
        saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
    assert len(saved) == len(model.weights), (len(saved), len(model.weights))

    # A fresh model from get_config with the same weights gives the same numbers.
    fresh = DualEncoder.from_config(model.get_config())
    assert fresh.count_params() == model.count_params()
    fresh.set_weights(model.get_weights())
    image2, text2 = fresh({"images": images, "token_ids": tokens})
    np.testing.assert_allclose(image2, image_emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text2, text_emb, rtol=1e-5, atol=1e-6)
    return image_emb, text_emb
