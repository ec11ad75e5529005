"""Class names that survive their own round trip, checked where they enter.

Class names are stored one per line (new-experiment's class_names.txt) or as a JSON list (the
writer's <prefix>.class_names.json) and read back by evaluate and export. A name holding a newline
or another control character does not read back as the same list (4 classes became 5 lines), and
two labels of one name cannot be told apart by name (export refused them only at the end). The
writers, basic-new-experiment and zero-shot (basic_tf/zeroshot/prompts.py, which also refuses a
single class) all use `check` / `check_name`.
"""
import unicodedata
from typing import List, Sequence


def check_name(name: str, where: str, index=None) -> str:
    """ValueError naming `where` (and the class index) and the name when it holds a control
    character."""
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        label = "class name" if index is None else f"class name {index}"
        raise ValueError(f"{where}: {label} {name!r} holds a control character (newline, tab, "
                         "...); one line per name is how class names are stored, so rename it")
    return name


def check(names: Sequence[str], where: str, unique: bool = False) -> List[str]:
    """`names` as a list; ValueError naming `where`, the index and the name for a control
    character, and (with `unique`) for a name that an earlier label already has."""
    names = list(names)
    first = {}
    for i, name in enumerate(names):
        check_name(name, where, i)
        if unique and name in first:
            raise ValueError(f"{where}: class {i} and class {first[name]} are both named "
                             f"{name!r}; each class needs a distinct name (evaluate and export "
                             "tell classes apart by name)")
        first.setdefault(name, i)
    return names
