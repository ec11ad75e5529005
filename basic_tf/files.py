"""Files written whole or not at all, through tf.io.gfile (a bucket path works like a folder).

A result file that a full disk, a kill or a bad path interrupts must not be left half written
and must not hide which file failed: `write_atomically` writes a hidden sibling, renames it over
the target only when complete, removes it on failure, and raises an OSError whose first line
names the target.
"""
import os
import uuid
from typing import Union

import tensorflow as tf


def write_atomically(path: str, content: Union[str, bytes], what: str = "") -> str:
    """Writes `content` (str as UTF-8, or bytes) to `path`; returns `path`.

    what: the flag or field the path came from (e.g. "--out"), put first in the error.
    Raises OSError("<what>: could not write <path>: <cause>") and leaves neither a partial
    `path` nor the temporary sibling behind.
    """
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        try:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        except (OSError, tf.errors.OpError):
            pass
        cause = getattr(e, "message", None) or str(e)
        prefix = f"{what}: " if what else ""
        raise OSError(f"{prefix}could not write {path}: {cause}") from e
    return path
