"""Fixtures of the export tests: the tiny DualEncoder, a small SentencePiece model, test images,
and one export shared by every test (exporting traces four signatures: about 40 s)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config
from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece
from export_helpers import CLASS_NAMES, LIMITS, TEMPLATES


@pytest.fixture(scope="session")
def model():
    config.parse(["tiny"])
    from basic_tf.models import DualEncoder

    keras.utils.set_random_seed(0)
    return DualEncoder()


@pytest.fixture(scope="session")
def tokenizer(model, tmp_path_factory):
    words = "a photo of the product shirt top boot ankle bag cafe au lait dog cat red blue"
    captions = [f"{t.replace('{c}', w)}" for t in TEMPLATES for w in words.split()] + CLASS_NAMES
    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    path = train_sentencepiece(captions * 4, prefix, vocab_size=60)
    return Tokenizer(path, model.max_text_len)


def _png(pixels: np.ndarray) -> bytes:
    return tf.io.encode_png(pixels).numpy()


@pytest.fixture(scope="session")
def images():
    """{name: (encoded bytes, float32 [32, 32, 3] the model sees or None)}.

    PNGs at the model's 32x32 need no resize, so the pixels the model must see are known
    independently of the decoding code; the JPEG (non-square, resized) has no such reference.
    """
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, [32, 32, 3], dtype=np.uint8) for _ in range(2)]
    gray = rng.integers(0, 256, [32, 32, 1], dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, [40, 56, 3], dtype=np.uint8),
                             quality=95).numpy()
    return {
        "rgb0": (_png(rgb[0]), rgb[0] / 255.0),
        "rgb1": (_png(rgb[1]), rgb[1] / 255.0),
        "gray": (_png(gray), np.repeat(gray, 3, axis=-1) / 255.0),
        "jpeg": (jpeg, None),
    }


@pytest.fixture(scope="session")
def exported(model, tokenizer, tmp_path_factory):
    """Path of the version directory of the shared export (top_k=3 of 4 classes)."""
    from basic_tf.export import export_for_serving, serving_limits

    export_dir = str(tmp_path_factory.mktemp("serve"))
    return export_for_serving(model, tokenizer, export_dir, CLASS_NAMES, TEMPLATES,
                              model_name="tiny", top_k=3, limits=serving_limits(**LIMITS),
                              gin_config="# test config\n")


@pytest.fixture(scope="session")
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
