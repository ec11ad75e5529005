"""The shipped class-name and template files: counts, provenance, subsets, errors."""
import json

import pytest

from basic_tf.zeroshot import prompts


def test_shipped_counts():
    assert len(prompts.load_class_names("imagenet1k")) == 1000
    assert len(prompts.load_templates("imagenet1k")) == 80
    assert len(prompts.load_templates("imagenet1k_simple")) == 7
    for name, count in [("cifar10", 10), ("cifar100", 100), ("mnist", 10), ("fashion_mnist", 10),
                        ("imagenet_a", 200), ("imagenet_r", 200)]:
        assert len(prompts.load_class_names(name)) == count, name
    for name in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
        assert prompts.load_templates(name), name


def test_known_entries():
    """Spot checks against CLIP's published lists (Radford et al. 2021, data/prompts.md)."""
    names = prompts.load_class_names("imagenet1k")
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[-1] == "toilet paper"
    templates = prompts.load_templates("imagenet1k")
    assert templates[0] == "a bad photo of a {c}."
    assert templates[-1] == "a tattoo of the {c}."
    assert prompts.load_class_names("cifar10")[:2] == ["airplane", "automobile"]
    cifar100 = prompts.load_class_names("cifar100")
    assert cifar100[1] == "aquarium fish" and cifar100 == sorted(cifar100)
    assert prompts.load_templates("mnist") == ['a photo of the number: "{c}".']


def test_subsets_index_the_parent_labels():
    full = prompts.load_class_names("imagenet1k")
    for name in ("imagenet_a", "imagenet_r"):
        indices = prompts.class_subset_indices(name)
        assert indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < 1000
        assert prompts.load_class_names(name) == [full[i] for i in indices]
        assert prompts.class_subset_parent(name) == "imagenet1k"
    # ImageNet-A's first class (n01498041, stingray) and ImageNet-R's (n01443537, goldfish).
    assert prompts.load_class_names("imagenet_a")[0] == "stingray"
    assert prompts.load_class_names("imagenet_r")[0] == "goldfish"
    assert prompts.class_subset_indices("imagenet1k") is None


def test_every_shipped_set_credits_its_source():
    for name in prompts.class_name_sets():
        assert prompts.source_of("class_names", name), name
    for name in prompts.template_sets():
        assert prompts.source_of("templates", name), name
    assert "MIT" in prompts.source_of("templates", "imagenet1k")["license"]


def test_fill_templates_is_class_major():
    out = prompts.fill_templates(["cat", "dog"], ["a {c}.", "the {c}!"])
    assert out == ["a cat.", "the cat!", "a dog.", "the dog!"]


def test_user_files(tmp_path):
    txt = tmp_path / "names.txt"
    txt.write_text("red car\n\nblue boat\n")
    assert prompts.load_class_names(str(txt)) == ["red car", "blue boat"]
    js = tmp_path / "templates.json"
    js.write_text(json.dumps(["a photo of {c}.", "{c}"]))
    assert prompts.load_templates(str(js)) == ["a photo of {c}.", "{c}"]


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="imagenet1k"):  # lists the available sets
        prompts.load_class_names("imagenet1000")
    with pytest.raises(ValueError, match="entry 1='a photo' has no '\\{c\\}'"):
        bad = tmp_path / "bad.txt"
        bad.write_text("a {c}\na photo\n")
        prompts.load_templates(str(bad))
    old = tmp_path / "old.txt"            # the caption templates' old '{}' is read as '{c}'
    old.write_text("a photo of a {}.\n")
    assert prompts.load_templates(str(old)) == ["a photo of a {c}."]
    with pytest.raises(ValueError, match="empty"):
        empty = tmp_path / "empty.txt"
        empty.write_text("\n")
        prompts.load_class_names(str(empty))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        prompts.load_class_names(str(tmp_path / "missing.txt"))


def test_prompt_checks_report_cuts_lost_names_and_unknown_pieces(tmp_path):
    """seq_len 6 keeps 5 pieces: 'x {c}' keeps short names, a long template loses every name."""
    from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece
    from basic_tf.zeroshot import prompt_checks

    words = "a photo of the cat dog x with long words here and there".split()
    spm = train_sentencepiece([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 5,
                              str(tmp_path / "sp"), vocab_size=40)
    tokenizer = Tokenizer(spm, 6)
    names = ["cat", "dog", "café"]                        # 'é' never seen: an unknown piece
    templates = ["{c}", "a photo of the long words here and there {c}"]
    report = prompt_checks.check_prompts(tokenizer, names, templates)
    assert report["prompts"] == 6 and report["cut"] == 3 and report["name_cut"] == 3
    assert report["classes_without_name"] == []            # '{c}' alone keeps every name
    assert report["unknown_classes"] == {"café": ["é"]}
    report = prompt_checks.check_prompts(tokenizer, names, templates[1:])
    assert report["classes_without_name"] == names
    lines = prompt_checks.describe(report)
    assert lines[0].startswith("3 of 3 prompts are longer than seq_len=6 and were cut")
    assert "3 classes lost their name in every prompt" in lines[2]
    assert "'café' ['é']" in lines[3]


def test_one_class_or_a_control_character_is_refused_where_names_enter(tmp_path):
    """Injected faults (README "Reliability"): a class-names file with one class (the old code
    evaluated it to a meaningless 100% top-1), and a JSON name holding a newline (a .txt written
    from it reads back as two names)."""
    one = tmp_path / "one.txt"
    one.write_text("cat\n")
    with pytest.raises(ValueError, match=r"one.txt' has one class name \('cat'\): zero-shot "
                                         r"classification chooses among"):
        prompts.load_class_names(str(one))
    newline = tmp_path / "names.json"
    newline.write_text(json.dumps(["plain", "line\nbreak"]))
    with pytest.raises(ValueError, match=r"names.json'.*class name 1 'line\\nbreak' holds a "
                                         r"control character"):
        prompts.load_class_names(str(newline))
