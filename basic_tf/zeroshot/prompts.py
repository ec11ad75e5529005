"""Class names and prompt templates for zero-shot classification, shipped as data files.

`data/class_names.json` holds one list of names per set (index i = label i of the dataset) and
named class *subsets* (ImageNet-A/-R use 200 of the 1000 ImageNet classes); `data/templates.json`
holds prompt template sets in which `{c}` stands for the class name. Each entry records where it
came from (clip-benchmark 1.6.2 / open-clip-torch 3.3.0 wheels, MIT) in its `source` field.
Nothing is downloaded at run time.

Wherever a set name is accepted, a path to a user file works too: `.txt` (one entry per line) or
`.json` (a list of strings).
"""
import functools
import json
import os
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from basic_tf.data import class_names
from basic_tf.data import templates as placeholder

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CLASS_NAMES_FILE = os.path.join(DATA_DIR, "class_names.json")
TEMPLATES_FILE = os.path.join(DATA_DIR, "templates.json")
PLACEHOLDER = placeholder.PLACEHOLDER  # '{c}', as in training caption templates


@functools.lru_cache(maxsize=None)
def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def class_name_sets() -> List[str]:
    """Names accepted by `load_class_names`: full sets, then subsets (e.g. 'imagenet_a')."""
    data = _load_json(CLASS_NAMES_FILE)
    return sorted(data["sets"]) + sorted(data.get("subsets", {}))


def template_sets() -> List[str]:
    """Names accepted by `load_templates`."""
    return sorted(_load_json(TEMPLATES_FILE)["sets"])


def _is_path(name: str) -> bool:
    return os.sep in name or name.endswith((".txt", ".json"))


def _read_list_file(path: str, what: str) -> List[str]:
    """A user file of strings: .txt one per line (blank lines skipped) or .json list."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"{what} file {path!r} does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    if path.endswith(".json"):
        items = json.loads(text)
        if isinstance(items, dict):
            items = items.get("names", items.get("templates"))
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ValueError(f"{what} file {path!r} must hold a JSON list of strings (or an object "
                             "with a 'names'/'templates' list)")
        return list(items)
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_class_names(name: str) -> List[str]:
    """Class names of a shipped set or subset (e.g. 'imagenet1k', 'imagenet_a'), or from a file.

    Returns a list of str in label order. For a subset, the names of the subset's classes in the
    order of `class_subset_indices(name)`.
    """
    if _is_path(name):
        names = _read_list_file(name, "class names")
    else:
        data = _load_json(CLASS_NAMES_FILE)
        if name in data["sets"]:
            names = list(data["sets"][name]["names"])
        elif name in data.get("subsets", {}):
            subset = data["subsets"][name]
            full = data["sets"][subset["of"]]["names"]
            names = [full[i] for i in subset["indices"]]
        else:
            raise ValueError(f"class-name set {name!r} is not in {CLASS_NAMES_FILE}; choose one of "
                             f"{class_name_sets()} or give a path to a .txt/.json file")
    # Repeated names are allowed: CLIP's ImageNet list has two 'missile's and two 'sunglasses'
    # (distinct WordNet classes); their classifier columns are simply equal.
    return check_class_names(names, f"class-name set {name!r}")


def check_class_names(names: Sequence[str], where: str) -> List[str]:
    """Refuses what zero-shot classification cannot use, naming `where`: fewer than 2 classes
    (with one, every image is 'right': a meaningless 100% top-1) and names holding a newline or
    another control character (basic_tf/data/class_names.py: a .txt file of them would not read
    back as the same list)."""
    names = list(names)
    if not names:
        raise ValueError(f"{where} is empty")
    if len(names) == 1:
        raise ValueError(f"{where} has one class name ({names[0]!r}): zero-shot classification "
                         "chooses among the class names, so with one every image is trivially "
                         "right (100% top-1 that means nothing); give at least 2")
    return class_names.check(names, where)


def class_subset_indices(name: str) -> Optional[List[int]]:
    """For a subset name: its indices (ascending) into the parent set's labels; else None.

    Used to map a dataset's parent-set labels (e.g. ImageNet-A's 1000-way TFDS labels) to columns
    of a classifier built from `load_class_names(name)`.
    """
    subsets = _load_json(CLASS_NAMES_FILE).get("subsets", {})
    return list(subsets[name]["indices"]) if name in subsets else None


def class_subset_parent(name: str) -> Optional[str]:
    """For a subset name: the full set it indexes into (e.g. 'imagenet1k'); else None."""
    subsets = _load_json(CLASS_NAMES_FILE).get("subsets", {})
    return subsets[name]["of"] if name in subsets else None


def load_templates(name: str) -> List[str]:
    """Prompt templates of a shipped set (e.g. 'imagenet1k': CLIP's 80) or from a file.

    Every template must contain '{c}' (where the class name goes); '{}' is read as '{c}' with a
    warning (basic_tf.data.templates).
    """
    if _is_path(name):
        templates = _read_list_file(name, "templates")
    else:
        sets = _load_json(TEMPLATES_FILE)["sets"]
        if name not in sets:
            raise ValueError(f"template set {name!r} is not in {TEMPLATES_FILE}; choose one of "
                             f"{template_sets()} or give a path to a .txt/.json file")
        templates = list(sets[name]["templates"])
    if not templates:
        raise ValueError(f"template set {name!r} is empty")
    return [placeholder.normalize_template(t, f"template set {name!r} entry {i}")
            for i, t in enumerate(templates)]


def fill_templates(class_names: Sequence[str], templates: Sequence[str]) -> List[str]:
    """All prompts, class-major: prompt [i * T + j] = templates[j] with class_names[i]."""
    return [placeholder.fill(t, c) for c in class_names for t in templates]


def source_of(kind: str, name: str) -> Dict:
    """The `source` (provenance and licence) record of a shipped set; kind 'class_names' or
    'templates'."""
    if kind == "class_names":
        data = _load_json(CLASS_NAMES_FILE)
        entry = data["sets"].get(name) or data.get("subsets", {}).get(name)
    elif kind == "templates":
        entry = _load_json(TEMPLATES_FILE)["sets"].get(name)
    else:
        raise ValueError(f"kind {kind!r} must be 'class_names' or 'templates'")
    if entry is None:
        raise ValueError(f"no shipped {kind} set named {name!r}")
    return entry["source"]
