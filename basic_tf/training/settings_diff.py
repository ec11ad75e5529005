"""What changed in the config since the run that wrote model_dir: the resume's record.

The previous run left model_dir/operative_config.gin (every binding it used, defaults included).
A resumed run compares the bindings it was given (from_gin passes gin.config_str()) with it:
optimizer and schedule changes are honoured and logged, and the old file is kept as
operative_config-until-<step>.gin; errors about shape-changing settings quote the same diff.
"""
import os
import re
from typing import Dict, List, Tuple

import tensorflow as tf

_BINDING = re.compile(r"^([A-Za-z_][\w./@]*)\s*=\s*(.*)$")


def parse_bindings(text: str) -> Dict[str, str]:
    """{binding: value text with whitespace removed} of gin config text (multi-line values
    joined; comments, imports and includes ignored)."""
    out, key = {}, None
    for line in text.splitlines():
        stripped = line.rstrip()
        if (not stripped.strip() or stripped.lstrip().startswith("#")
                or stripped.startswith(("import ", "include "))):
            continue
        match = _BINDING.match(stripped)
        if match and not line[0].isspace():
            key = match.group(1)
            out[key] = match.group(2)
        elif key is not None:
            out[key] += stripped.strip()
    return {k: re.sub(r"\s+", "", v) for k, v in out.items()}


def changed_settings(model_dir: str, given: str) -> List[Tuple[str, str, str]]:
    """[(binding, value in model_dir's operative config, value now)] for every binding in
    `given` (gin config text: the bindings of this run) whose value differs; [] without a
    previous operative config."""
    path = os.path.join(model_dir, "operative_config.gin")
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        before = parse_bindings(f.read())
    now = parse_bindings(given)
    return [(k, before[k], v) for k, v in sorted(now.items()) if k in before and before[k] != v]


def describe(changes: List[Tuple[str, str, str]],
             lead: str = " Settings changed since model_dir was written: ") -> str:
    """lead + 'a: 1 -> 2; b: x -> y.' ('' for no change)."""
    if not changes:
        return ""
    return lead + "; ".join(f"{k}: {old} -> {new}" for k, old, new in changes) + "."


def keep_previous_config(model_dir: str, step: int) -> str:
    """Copies model_dir/operative_config.gin to operative_config-until-<step>.gin; -> path."""
    source = os.path.join(model_dir, "operative_config.gin")
    target = os.path.join(model_dir, f"operative_config-until-{step}.gin")
    tf.io.gfile.copy(source, target, overwrite=True)
    return target
