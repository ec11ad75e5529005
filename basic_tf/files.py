"""Files written whole or not at all, through tf.io.gfile (a bucket path works like a folder).

A result file that a full disk, a kill or a bad path interrupts must not be left half written
and must not hide which file failed: `write_atomically` writes a hidden sibling, renames it over
the target only when complete, removes it on failure, and raises an OSError whose first line
names the target. `absolute`, `is_absolute`, `normalized`, `is_inside` and `remove_matching` do what
os.path.abspath / isabs / normpath / commonpath and glob + os.remove do, and leave a bucket
path a bucket path. `process_alive` tells whether the process that left a file (an export's
staging folder, a model_dir lock) still runs on this host.
"""
import os
import posixpath
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


def absolute(path: str) -> str:
    """A local `path` made absolute; a URL ("gs://b/x", "ram://x") as given (os.path.abspath
    would make it "<cwd>/gs:/b/x")."""
    return path if "://" in path else os.path.abspath(path)


def is_absolute(path: str) -> bool:
    """Whether `path` names one place wherever the process runs: a URL or an absolute path."""
    return "://" in path or os.path.isabs(path)


def normalized(path: str) -> str:
    """absolute(path) with "." and ".." resolved as written (no link followed); a URL keeps its
    "scheme://" (os.path.normpath would make "gs://b" "gs:/b")."""
    scheme, sep, rest = path.partition("://")
    if sep:
        return scheme + sep + posixpath.normpath(rest).lstrip("/")
    return os.path.normpath(os.path.abspath(path))


def is_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or under it, both normalized (see `normalized`)."""
    path, folder = normalized(path), normalized(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def remove_matching(pattern: str) -> list:
    """Removes the files matching glob `pattern` (tf.io.gfile.glob); returns their paths."""
    paths = tf.io.gfile.glob(pattern)
    for path in paths:
        tf.io.gfile.remove(path)
    return paths


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, owned by another user
        return True
    return True
