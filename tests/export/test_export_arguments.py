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
