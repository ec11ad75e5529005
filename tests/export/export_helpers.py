"""Independent references for the export tests: what each signature must return, computed from
the Keras model directly (eager calls, NumPy prompt ensembling and softmax)."""
import base64

import numpy as np
import tensorflow as tf

from basic_tf.data.augment import decode_and_center_crop

# Names that exercise the in-graph template filling: a regex rewrite reference ("\1"), a
# backslash, a '$' and non-ASCII text must all be inserted verbatim, like Python's str.replace.
CLASS_NAMES = ["T-shirt/top", "Ankle boot", "bag \\1 $0", "café au lait"]
TEMPLATES = ["a photo of a {c}.", "{c}, a product photo of {c}"]
# Small request bounds, so that every bad input is cheap to send.
LIMITS = dict(max_batch_size=8, max_image_bytes=65536, max_image_pixels=4096, max_text_bytes=64,
              max_classes=6, max_templates=3, max_prompts=12)
SEQ_LEN = 12          # make_dataset.seq_len of the export (the text tower takes up to 16)
TOP_K = 3
IMAGE_NAMES = ["rgb0", "jpeg", "gray", "rgb1"]     # the batch every image request sends
OTHER_NAMES, OTHER_TEMPLATES = ["boot", "dog", "red cat"], ["the {c}", "a {c} photo", "{c}"]
TEXTS = ["a photo of a dog", "", "café au lait"]
TOL = 1e-5


def b64_list(values):
    return [base64.b64encode(v if isinstance(v, bytes) else v.encode("utf-8")).decode("ascii")
            for v in values]


def model_pixels(images, name):
    """float32 [32, 32, 3] the model must see for test image `name` (see conftest.images)."""
    data, pixels = images[name]
    if pixels is None:   # the resized JPEG: the data pipeline's evaluation view, run eagerly
        pixels = decode_and_center_crop(tf.constant(data), 32).numpy()
    return np.asarray(pixels, np.float32)


def image_embeddings(model, images, names):
    """float32 [N, D] from model.encode_image on the known pixels."""
    pixels = np.stack([model_pixels(images, n) for n in names])
    return model.encode_image(tf.constant(pixels)).numpy()


def text_embeddings(model, tokenizer, texts):
    return model.encode_text(tokenizer(tf.constant(texts))).numpy()


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def class_matrix(model, tokenizer, class_names, templates):
    """float64 [D, C]: normalise(mean over templates of normalise(embed(str.replace)))."""
    columns = []
    for name in class_names:
        prompts = [t.replace("{c}", name) for t in templates]
        columns.append(_normalize(_normalize(text_embeddings(model, tokenizer, prompts)
                                             .astype(np.float64)).mean(axis=0)))
    return np.stack(columns, axis=1)


def probabilities(model, image_emb, matrix):
    logits = float(model.logit_scale) * image_emb.astype(np.float64) @ matrix
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
