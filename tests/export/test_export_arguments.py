"""export_for_serving refuses bad arguments before any tracing, naming what is wrong."""
import os

import pytest

from basic_tf.data.tokenizer import Tokenizer
from basic_tf.export import export_for_serving

NAMES, TEMPLATES = ["cat", "dog"], ["a {c}"]


@pytest.mark.parametrize("names, templates, message", [
    ([], TEMPLATES, "class_names must be a non-empty list of non-blank strings"),
    (["cat", " "], TEMPLATES, "class_names must be a non-empty list"),
    (["cat", "dog", "cat"], TEMPLATES, r"class_names repeats \['cat'\]"),
    (NAMES, [], "templates must be a non-empty list"),
    (NAMES, ["a {c}", "a photo"], r"templates\[1\]='a photo' has no '\{c\}'"),
])
def test_bad_class_names_or_templates(model, tokenizer, tmp_path, names, templates, message):
    with pytest.raises(ValueError, match=message):
        export_for_serving(model, tokenizer, str(tmp_path), names, templates)
    assert os.listdir(tmp_path) == []


def test_tokenizer_longer_than_the_text_tower(model, tokenizer_path, tmp_path):
    long = Tokenizer(tokenizer_path, model.max_text_len + 1)
    with pytest.raises(ValueError, match=f"seq_len={model.max_text_len + 1} is longer than the "
                                         f"text tower's max_text_len={model.max_text_len}"):
        export_for_serving(model, long, str(tmp_path), NAMES, TEMPLATES)


def test_existing_version_and_bad_names(model, tokenizer, tmp_path):
    os.makedirs(tmp_path / "basic" / "3")
    with pytest.raises(FileExistsError, match="version 3 of model 'basic' already exists"):
        export_for_serving(model, tokenizer, str(tmp_path), NAMES, TEMPLATES, version=3)
    with pytest.raises(ValueError, match="model_name='a/b'"):
        export_for_serving(model, tokenizer, str(tmp_path), NAMES, TEMPLATES, model_name="a/b")


def test_a_class_whose_every_prompt_lost_its_name_is_refused(model, tokenizer, tmp_path):
    """SEQ_LEN=12 keeps 11 pieces: after a long prefix the class name is cut from every prompt."""
    long = ["a photo of a photo of a photo of a photo of a photo of the {c}"]
    with pytest.raises(ValueError, match="export_for_serving: class 'cat' .* lost its name in "
                                         "every prompt: cut at the tokenizer's seq_len=12"):
        export_for_serving(model, tokenizer, str(tmp_path), NAMES, long)
    assert os.listdir(tmp_path) == []


def test_weights_whose_scores_are_not_finite_are_refused(model, tokenizer, tmp_path):
    """Injected fault: the weights of a checkpoint the divergence guard set aside (finite values
    near 1e18; README "Reliability"). The export probes `classify` on a grey image and refuses
    the NaN scores, leaving no version behind (the old code exported them and served NaN)."""
    import numpy as np

    saved = [w.numpy() for w in model.weights]
    try:
        for w in model.trainable_weights:
            w.assign(np.full(w.shape, 1e18, w.dtype.name if hasattr(w.dtype, "name") else w.dtype))
        with pytest.raises(ValueError, match=r"export_for_serving: classify on a probe image "
                                             r"gives scores \[.*\], not finite numbers"):
            export_for_serving(model, tokenizer, str(tmp_path), NAMES, TEMPLATES)
    finally:
        for w, value in zip(model.weights, saved):
            w.assign(value)
    assert [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.isdigit()] == []


def test_a_two_dimensional_images_tensor_is_named(model, tokenizer, images):
    """Injected fault: `images` given as [[a, b]] (rank 2) to the signature function. The error
    names the signature, the input and the shape (the old code reached a raw ConcatOp error)."""
    import numpy as np
    import tensorflow as tf

    from basic_tf.export.inputs import serving_limits
    from basic_tf.export.signatures import make_serving_functions

    functions = make_serving_functions(
        model, tokenizer, np.zeros([model.embed_dim, 2], np.float32), NAMES, TEMPLATES, top_k=1,
        limits=serving_limits())
    png = next(iter(images.values()))[0]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"classify: images must be a list of strings \(rank 1\), got a "
                             r"tensor of shape \[1 2\]"):
        functions["classify"][0](tf.constant([[png, png]]))


@pytest.mark.parametrize("names, message", [
    (["cat"], r"class_names has one class name \('cat'\)"),
    (["cat", "dog\tdog"], r"class name 1 'dog\\tdog' holds a control character"),
])
def test_one_class_or_a_control_character_is_not_exported(model, tokenizer, tmp_path, names,
                                                           message):
    with pytest.raises(ValueError, match=message):
        export_for_serving(model, tokenizer, str(tmp_path), names, TEMPLATES)
    assert os.listdir(tmp_path) == []
