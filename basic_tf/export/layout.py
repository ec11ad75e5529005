"""TF Serving's on-disk layout: <export_dir>/<model_name>/<version>/ and <export_dir>/models.config.

TF Serving watches each model's base path (<export_dir>/<model_name>) and serves the highest
integer-named sub-directory; names that are not integers are ignored. So a version is first
written under a hidden temporary name and renamed into place only when complete: a server
polling the base path never loads a half-written version (on a local disk: a bucket has no
atomic folder rename, see `_move_folder`).
"""
import contextlib
import os
import re
import socket
import uuid
from typing import Iterator, List, Optional

import tensorflow as tf
from absl import logging

from basic_tf.files import absolute, process_alive, write_atomically

MODELS_CONFIG = "models.config"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(model_name: str) -> str:
    """A model name is one URL path segment (/v1/models/<name>:predict) and a folder name."""
    if not isinstance(model_name, str) or not _MODEL_NAME.match(model_name):
        raise ValueError(f"model_name={model_name!r}: use letters, digits, '_', '.', '-' and start "
                         "with a letter or digit (it is a URL path segment and a folder name)")
    return model_name


def existing_versions(base_path: str) -> List[int]:
    """The integer version directories under a model's base path, ascending ([] if none)."""
    return sorted(int(name) for name in _children(base_path)
                  if name.isdigit() and tf.io.gfile.isdir(os.path.join(base_path, name)))


def _children(folder: str) -> List[str]:
    """Names in `folder` (tf.io.gfile: a bucket's end with "/" for folders), sorted; [] when it
    is no folder."""
    if not tf.io.gfile.isdir(folder):
        return []
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(folder))


def next_version(base_path: str) -> int:
    """One more than the highest existing version, or 1."""
    versions = existing_versions(base_path)
    return versions[-1] + 1 if versions else 1


def resolve_version_path(export_dir: str, model_name: str, version: Optional[int]) -> str:
    """The absolute <export_dir>/<model_name>/<version> a new export goes to; it must not exist.

    version=None takes `next_version`; otherwise an integer >= 1.
    """
    base_path = os.path.join(absolute(export_dir), check_model_name(model_name))
    version = next_version(base_path) if version is None else version
    final = version_path(export_dir, model_name, version)
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"version {version} of model {model_name!r} already exists at "
                              f"{final}; pass version={next_version(base_path)} (or None for the "
                              "next free one), or remove that directory")
    return final


# A staging folder is named .tmp-<version>-<pid>-<host>-<8 hex>: the writer's process and host,
# so that a later export can tell the litter of a killed export from a live one.
_STAGING = re.compile(r"^\.tmp-\d+-(\d+)-(.*)-[0-9a-f]{8}$")


def clear_stale_staging(base_path: str) -> List[str]:
    """Removes the .tmp-* folders under a model's base path that no live export is writing: those
    of a process on this host that has ended (an export killed by SIGKILL or SIGTERM), and those
    in the older name format without a process id. Folders of another host are left alone.
    Returns the removed paths."""
    host, removed = socket.gethostname(), []
    for name in _children(base_path):
        if not name.startswith(".tmp-"):
            continue
        match = _STAGING.match(name)
        if match and (match.group(2) != host or process_alive(int(match.group(1)))):
            continue
        path = os.path.join(base_path, name)
        _remove_tree(path)
        logging.warning("removed %s, left by an export that did not finish", path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def staged_dir(final: str) -> Iterator[str]:
    """Yields an empty hidden sibling of `final`; renames it to `final` when the block succeeds.

    On an exception the temporary directory is removed and nothing is left behind; the litter of
    an earlier export that was killed is cleared first (`clear_stale_staging`).
    """
    parent, name = os.path.split(absolute(final))
    tf.io.gfile.makedirs(parent)
    clear_stale_staging(parent)
    staging = os.path.join(parent, f".tmp-{name}-{os.getpid()}-{socket.gethostname()}-"
                                   f"{uuid.uuid4().hex[:8]}")
    tf.io.gfile.mkdir(staging)
    try:
        yield staging
        _move_folder(staging, final)
    except BaseException:
        _remove_tree(staging)
        raise


def _move_folder(source: str, target: str) -> None:
    """Renames folder `source` to `target`: at once on a local disk; file by file on a URL
    filesystem (gs:// has no folder to rename, TF copies each object; ram:// would rename only
    the folder's own entry), saved_model.pb last, so a version there is not complete at once."""
    if "://" not in target:
        tf.io.gfile.rename(source, target)
        return
    files = [os.path.join(folder, name) for folder, _, names in tf.io.gfile.walk(source)
             for name in names]
    for path in sorted(files, key=lambda p: os.path.basename(p) == "saved_model.pb"):
        destination = target + path[len(source):]
        tf.io.gfile.makedirs(os.path.dirname(destination))
        tf.io.gfile.rename(path, destination)
    _remove_tree(source)


def _remove_tree(path: str) -> None:
    """tf.io.gfile.rmtree, quiet when `path` is already gone or cannot be removed."""
    try:
        tf.io.gfile.rmtree(path)
    except tf.errors.OpError:
        pass


def version_path(export_dir: str, model_name: str, version: int) -> str:
    """<export_dir>/<model_name>/<version> (absolute). version must be an integer >= 1."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version={version!r}: TF Serving versions are integers >= 1")
    return os.path.join(absolute(export_dir), check_model_name(model_name), str(version))


def _quote(text: str) -> str:
    """A text-format protobuf string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def models_config_text(base_paths: dict) -> str:
    """ModelServerConfig text proto serving each {model_name: base_path}, sorted by name."""
    entries = []
    for name in sorted(base_paths):
        entries.append("  config {\n"
                       f"    name: {_quote(check_model_name(name))}\n"
                       f"    base_path: {_quote(base_paths[name])}\n"
                       '    model_platform: "tensorflow"\n'
                       "  }\n")
    return "model_config_list {\n" + "".join(entries) + "}\n"


def write_models_config(export_dir: str, base_path_prefix: Optional[str] = None) -> str:
    """Writes <export_dir>/models.config listing every model folder that has a version.

    base_path_prefix: where the server sees export_dir (e.g. "/models" when export_dir is mounted
    there in a container); default: the absolute export_dir. Returns the config's path.
    """
    export_dir = absolute(export_dir)
    prefix = (base_path_prefix or export_dir).rstrip("/") or "/"
    models = {name: os.path.join(prefix, name) for name in _children(export_dir)
              if _MODEL_NAME.match(name) and existing_versions(os.path.join(export_dir, name))}
    if not models:
        raise ValueError(f"no <model_name>/<version>/ folder in {export_dir}: export a model first")
    return write_atomically(os.path.join(export_dir, MODELS_CONFIG), models_config_text(models))
