"""build_zero_shot_classifier against a NumPy prompt-ensembling reference."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.zeroshot import build_zero_shot_classifier, prompts

from zeroshot_helpers import EMBED_DIM, hash_tokenizer

CLASSES = ["cat", "dog", "red car", "blue boat", "tench", "goldfish", "toilet paper"]
TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {c}.", "{c}"]


def numpy_reference(encoder, class_names, templates):
    """Embed every prompt in one eager call; normalise, average per class, renormalise."""
    texts = prompts.fill_templates(class_names, templates)
    emb = encoder(hash_tokenizer(tf.constant(texts))).numpy().astype(np.float64)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    mean = emb.reshape(len(class_names), len(templates), -1).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).T


@pytest.mark.parametrize("batch_size", [4, 21, 100])  # ragged last batch, exact fit, one batch
def test_matches_numpy_reference(text_encoder, batch_size):
    got = build_zero_shot_classifier(text_encoder, hash_tokenizer, CLASSES, TEMPLATES,
                                     batch_size=batch_size)
    want = numpy_reference(text_encoder, CLASSES, TEMPLATES)
    assert got.shape == (EMBED_DIM, len(CLASSES)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=0), 1.0, atol=1e-6)


def test_renormalises_an_encoder_without_unit_norm(text_encoder):
    """Each prompt is normalised before averaging: per-prompt scales (1..5, from the token ids)
    on the encoder's outputs change nothing."""
    def scaled(ids):
        scale = 1 + tf.reduce_sum(ids, axis=1, keepdims=True) % 5
        return text_encoder(ids) * tf.cast(scale, tf.float32)

    got = build_zero_shot_classifier(scaled, hash_tokenizer, CLASSES, TEMPLATES, batch_size=5)
    np.testing.assert_allclose(got, numpy_reference(text_encoder, CLASSES, TEMPLATES), atol=2e-6)


def test_one_template_is_the_normalised_prompt_embedding(text_encoder):
    got = build_zero_shot_classifier(text_encoder, hash_tokenizer, ["cat", "dog"], ["{c}"])
    emb = text_encoder(hash_tokenizer(tf.constant(["cat", "dog"]))).numpy()
    np.testing.assert_allclose(got, emb.T / np.linalg.norm(emb, axis=-1), atol=1e-6)


def test_rejects_empty_inputs(text_encoder):
    with pytest.raises(ValueError, match="at least one class name"):
        build_zero_shot_classifier(text_encoder, hash_tokenizer, [], TEMPLATES)
    with pytest.raises(ValueError, match="batch_size=0"):
        build_zero_shot_classifier(text_encoder, hash_tokenizer, CLASSES, TEMPLATES, batch_size=0)
