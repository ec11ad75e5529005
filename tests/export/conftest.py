"""Fixtures of the export tests: the tiny DualEncoder, a small SentencePiece model, test images,
one export shared by every test (made by tools/export.py from a checkpoint of the model: about
45 s) and the reference outputs computed from the Keras model."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config
from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece
from export_helpers import (CLASS_NAMES, IMAGE_NAMES, LIMITS, OTHER_NAMES, OTHER_TEMPLATES,
                            SEQ_LEN, TEMPLATES, TEXTS, TOP_K, class_matrix, image_embeddings,
                            probabilities, text_embeddings)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def model():
    config.parse(["models/tiny"])
    from basic_tf import from_gin

    keras.utils.set_random_seed(0)
    return from_gin.dual_encoder()


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    words = "a photo of the product shirt top boot ankle bag cafe au lait dog cat red blue"
    captions = [t.replace("{c}", w) for t in TEMPLATES for w in words.split()] + CLASS_NAMES
    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    return train_sentencepiece(captions * 4, prefix, vocab_size=60)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    return Tokenizer(tokenizer_path, SEQ_LEN)


def _png(pixels: np.ndarray) -> bytes:
    return tf.io.encode_png(pixels).numpy()


@pytest.fixture(scope="session")
def images():
    """{name: (encoded bytes, float32 [32, 32, 3] the model must see, or None)}.

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
def exported(model, tokenizer_path, tmp_path_factory):
    """The version directory written by tools/export.py from a checkpoint of `model`, with the
    tokenizer, token length, limits and top_k given as gin bindings (as an experiment would)."""
    work = tmp_path_factory.mktemp("export")
    checkpoint = str(work / "model.weights.h5")
    model.save_weights(checkpoint)
    for name, values in [("classes.json", CLASS_NAMES), ("templates.json", TEMPLATES)]:
        (work / name).write_text(json.dumps(values), encoding="utf-8")
    bindings = [f"make_dataset.tokenizer_path='{tokenizer_path}'", "make_dataset.image_size=32",
                f"make_dataset.seq_len={SEQ_LEN}", f"export_for_serving.top_k={TOP_K}"]
    bindings += [f"serving_limits.{k}={v}" for k, v in LIMITS.items()]
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "export.py"),
               "--gin_file=models/tiny", f"--checkpoint={checkpoint}",
               f"--export_dir={work / 'serve'}",
               "--model_name=tiny", f"--class_names={work / 'classes.json'}",
               f"--templates={work / 'templates.json'}"]
    command += [f"--gin_bindings={b}" for b in bindings]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = str(work / "serve" / "tiny" / "1")
    assert proc.stdout.strip().endswith(f"exported {path}"), proc.stdout
    return path


@pytest.fixture(scope="session")
def reference(model, tokenizer, images):
    """What each request must return: Keras model calls, NumPy ensembling and softmax."""
    image_emb = image_embeddings(model, images, IMAGE_NAMES)
    probs = probabilities(model, image_emb, class_matrix(model, tokenizer, CLASS_NAMES, TEMPLATES))
    other = probabilities(model, image_emb,
                          class_matrix(model, tokenizer, OTHER_NAMES, OTHER_TEMPLATES))
    return {"image": image_emb, "probs": probs, "other": other,
            "top_ids": np.argsort(-probs, axis=-1)[:, :TOP_K],
            "text": text_embeddings(model, tokenizer, TEXTS)}


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT
