"""Class names against the label names the records carry, so labels cannot silently mismatch.

Every labelled record stores its label (int) and label name (schema `label/name`). A classifier
built from class names in another order than the records' labels scores near chance without
any error; these checks compare the two before any evaluation or export:

  record_label_names(pattern)            {label: name} over all records (cheap: no image decode)
  check_class_names(given, names, ...)   error naming the first mismatch (index, given, record's)
  label_map_by_name(given, names, ...)   record label -> given column, matched by name
  order_by_records(given, names, ...)    the given names re-ordered into the records' label order
  label_map_for(given, pattern, by_name) what tools/evaluate.py calls: check, or map by name

Names match after `normalize` (case, '_' as space, whitespace folded): the folder source turns
`ankle_boot/` into 'ankle boot', which a user may write 'Ankle boot'.
"""
from typing import Dict, List, Optional, Sequence, Union

import tensorflow as tf
from absl import logging

from basic_tf.data import schema

_SPEC = {schema.LABEL_KEY: schema.FEATURE_SPEC[schema.LABEL_KEY],
         schema.LABEL_NAME_KEY: schema.FEATURE_SPEC[schema.LABEL_NAME_KEY]}


def normalize(name: str) -> str:
    """The key names are compared by: lower case, '_' read as space, whitespace folded."""
    return " ".join(name.replace("_", " ").lower().split())


def record_label_names(file_pattern: Union[str, Sequence[str]]) -> Dict[int, str]:
    """{label: label name} of the labelled records matching `file_pattern`, in label order.

    Records without a label name are left out (an empty dict: nothing to check). Unreadable
    records are skipped, as the pipeline does. Raises ValueError when one label carries two
    names (the records themselves disagree).
    """
    files = schema.list_shards(file_pattern)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(8, len(files))).ignore_errors()
    ds = ds.batch(4096).map(lambda r: tf.io.parse_example(r, _SPEC),
                            num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    names: Dict[int, str] = {}
    for batch in ds.as_numpy_iterator():
        for label, name in set(zip(batch[schema.LABEL_KEY].tolist(),
                                   batch[schema.LABEL_NAME_KEY].tolist())):
            name = name.decode("utf-8", "replace")
            if label < 0 or not name:
                continue
            if names.setdefault(label, name) != name:
                raise ValueError(f"{file_pattern}: label {label} is named both "
                                 f"{names[label]!r} and {name!r} in the records")
    return dict(sorted(names.items()))


def _records_order(names: Dict[int, str], limit: int = 12) -> str:
    shown = ", ".join(f"{label} {name!r}" for label, name in list(names.items())[:limit])
    return shown + (", ..." if len(names) > limit else "")


def check_class_names(given: Sequence[str], names: Dict[int, str], where: str,
                      flag: str = "--class_names") -> None:
    """Raises ValueError at the first label whose record name differs from given[label].

    `where` names the records (their glob), `flag` what the user gave. A record label beyond
    the given names is a mismatch too. Nothing to check (no label names) passes.
    """
    for label, name in names.items():
        mine = given[label] if label < len(given) else None
        if mine is None or normalize(mine) != normalize(name):
            what = (f"class {label} is {mine!r}" if mine is not None else
                    f"there are only {len(given)} class names")
            raise ValueError(
                f"{flag}: {what} but the records {where} name label {label} {name!r} (the "
                f"records' label order: {_records_order(names)}). Give the class names in the "
                "records' label order, or pass --labels_by_name to match them by name")


def label_map_by_name(given: Sequence[str], names: Dict[int, str], where: str,
                      flag: str = "--class_names") -> List[int]:
    """int [max label + 1]: record label -> index of its name in `given` (-1: label unused).

    Raises ValueError naming the first record label name that is not among the given names.
    """
    columns = {}
    for i, name in enumerate(given):
        columns.setdefault(normalize(name), i)
    table = [-1] * (max(names) + 1 if names else 0)
    for label, name in names.items():
        if normalize(name) not in columns:
            raise ValueError(f"{flag}: the records {where} have label {label} {name!r}, which "
                             f"is not among the {len(given)} class names given "
                             f"({list(given)[:12]}{'...' if len(given) > 12 else ''})")
        table[label] = columns[normalize(name)]
    return table


def order_by_records(given: Sequence[str], names: Dict[int, str], where: str,
                     flag: str = "--class_names") -> List[str]:
    """The given names re-ordered so that index i is the records' label i (export: served
    class ids then equal the records' labels). Every record label must be named; given names
    the records lack keep their order after them."""
    table = label_map_by_name(given, names, where, flag)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{flag}: the records {where} use labels {sorted(names)[:12]}, not "
                         "0..N-1; give the class names in label order instead of "
                         "--labels_by_name")
    ordered = [given[table[label]] for label in sorted(names)]
    return ordered + [n for i, n in enumerate(given) if i not in set(table)]


def label_map_for(given: Sequence[str], file_pattern: Union[str, Sequence[str]],
                  by_name: bool = False) -> Optional[List[int]]:
    """Evaluation: None when the given names are in the records' label order (else the error of
    check_class_names); with `by_name`, the label map of label_map_by_name."""
    names = record_label_names(file_pattern)
    if not names:
        logging.warning("%s: the records carry no label names; the class names cannot be "
                        "checked (label i is class name i)", file_pattern)
        return None
    if by_name:
        return label_map_by_name(given, names, str(file_pattern))
    check_class_names(given, names, str(file_pattern))
    return None


def names_for_export(given: Sequence[str], file_pattern: Union[str, Sequence[str], None],
                     by_name: bool = False) -> List[str]:
    """Export: the class names to bake, checked against (or, `by_name`, ordered as) the labelled
    records of `file_pattern`. No pattern, or no records on this machine: the given names as
    they are (logged)."""
    if not file_pattern:
        return list(given)
    try:
        names = record_label_names(file_pattern)
    except FileNotFoundError as e:  # training data not on this machine: nothing to check
        logging.warning("class names not checked against the records: %s", e)
        return list(given)
    if by_name:
        return order_by_records(given, names, str(file_pattern)) if names else list(given)
    check_class_names(given, names, str(file_pattern))
    return list(given)
