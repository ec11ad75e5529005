"""Gin configuration: one entry point that registers every configurable and parses files.

An experiment is one gin file in the repository's `gin/` folder (or any path). Every tunable is a
gin binding; `operative_config_str()` after training is the run's record.

A gin file, and a file it includes by its full name, may be on any tf.io.gfile filesystem
(`--gin_file=gs://bucket/exp.gin`, `include 'gs://bucket/base.gin'`): gin reads local files with
Python's open, and tf.io.gfile reads the rest (`_read_any_filesystem`). A relative include
resolves as gin resolves it (the shipped gin/ folder, then the working directory), not next to
the including file.
"""
import contextlib
import copy
import importlib
import os
import re
import tokenize
from typing import Iterable, Sequence

import gin

from basic_tf import files

# Every module that declares gin configurables. Importing them registers the names.
CONFIGURABLE_MODULES = (
    "basic_tf.parallel.strategy",
    "basic_tf.parallel.dtensor",
    "basic_tf.parallel.threads",
    "basic_tf.from_gin",
    "basic_tf.from_gin_data",
    "basic_tf.training.schedules",
    "basic_tf.training.optimizers",
    "basic_tf.training.mesh_placement",
    "basic_tf.planner",
)


def _gin_dir() -> str:
    """The folder of the shipped gin files: basic_tf/gin in an installed package (setup.py copies
    the repository's gin/ there), else the checkout's gin/. Installed, the folder above basic_tf
    is site-packages, whose gin/ is the gin-config package, so the packaged copy comes first."""
    here = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(here, "gin")
    return packaged if os.path.isdir(packaged) else os.path.join(os.path.dirname(here), "gin")


GIN_DIR = _gin_dir()


def register_configurables() -> None:
    """Imports every configurable module so gin knows all names (idempotent)."""
    for name in CONFIGURABLE_MODULES:
        importlib.import_module(name)


def resolve_gin_file(name: str) -> str:
    """Returns the path of a gin file given a path, or a bare name such as `tiny` or `tiny.gin`."""
    candidates = [name]
    base = name if name.endswith(".gin") else name + ".gin"
    candidates.append(os.path.join(GIN_DIR, base))
    for path in candidates:
        if _is_gin_file(path):
            return path
    available = sorted(f for f in os.listdir(GIN_DIR) if f.endswith(".gin")) if os.path.isdir(GIN_DIR) else []
    raise FileNotFoundError(
        f"gin file {name!r} not found (looked at {candidates}); available in {GIN_DIR}: {available}")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A URL after a gin search prefix: gin joins its prefixes to any path os.path.isabs calls relative,
# a URL included ("/site/gin/gs://b/x.gin"); a URL is absolute, so the join is the URL.
_URL_AFTER_PREFIX = re.compile(r"(?:^|/)([A-Za-z][A-Za-z0-9+.-]*://.*)$")


def _is_gin_file(path: str) -> bool:
    """Whether `path` is a file: a local one (os.path.isfile), or a URL (gs://, ram://, ...) that
    tf.io.gfile finds and is not a folder."""
    if not _URL.match(path):
        return os.path.isfile(path)
    import tensorflow as tf
    try:
        return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)
    except tf.errors.OpError:   # an unknown scheme, or a bucket we may not list
        return False


def _url_in(path: str):
    """The URL `path` names, gin's search prefix dropped (see _URL_AFTER_PREFIX); None for a
    local path."""
    found = _URL_AFTER_PREFIX.search(path)
    return found.group(1) if found else None


def _is_readable_url(path: str) -> bool:
    """gin's existence check for `_open_url`: a URL naming a file (local paths stay gin's)."""
    url = _url_in(path)
    return url is not None and _is_gin_file(url)


def _open_url(path: str):
    """gin's file reader for URLs: a text-mode tf.io.gfile.GFile (a context manager with
    readline, as gin's parser takes it)."""
    import tensorflow as tf
    return tf.io.gfile.GFile(_url_in(path), "r")


def _read_gin_text(path: str) -> str:
    """The text of the gin file `path`, local or on any tf.io.gfile filesystem."""
    if _URL.match(path):
        with _open_url(path) as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _read_any_filesystem() -> None:
    """Lets gin.parse_config_file (and so `include`) read URLs through tf.io.gfile. Our reader
    goes right after gin's first, Python's open (which keeps local paths), and before gin's
    package-path reader, which would log an error for each search prefix it does not find a URL
    under. Idempotent."""
    readers = gin.config._FILE_READERS
    if all(reader is not _open_url for reader, _ in readers):
        readers.insert(1, (_open_url, _is_readable_url))


def _search_gin_dir_first() -> None:
    """gin's includes (`include 'models/tiny.gin'`) resolve in GIN_DIR before the working
    directory. gin-config 0.5 tries the working directory first, and there its package-path reader
    logs an error for an include it does not find, or raises TypeError when the include's folder
    name is a namespace package on sys.path (tests/models/ in pytest); gin has no public way to
    put a search path first."""
    prefixes = gin.config._LOCATION_PREFIXES
    while GIN_DIR in prefixes:
        prefixes.remove(GIN_DIR)
    prefixes.insert(0, GIN_DIR)


# A gin file is Python code: `import os` (or `from __gin__ import dynamic_registration`) makes any
# function of that module configurable, and a binding `= @os.system()` calls it while the file is
# parsed. Imports are refused unless they stay inside basic_tf or the user says the file is trusted.
TRUSTED_IMPORT_ROOT = "basic_tf"


def _outside_imports(text: str, source: str, seen: set):
    """(source, line number, line, module) of each import outside basic_tf in a gin text and,
    recursively, in the files it includes (found as gin finds them)."""
    from gin import config_parser   # gin's own statement parser: no statement is executed

    for statement in config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True)):
        if isinstance(statement, config_parser.ImportStatement):
            root = statement.module.split(".")[0]
            if root != TRUSTED_IMPORT_ROOT:
                location = statement.location
                yield (source, location.line_num, (location.line_content or "").strip(),
                       statement.module)
        elif isinstance(statement, config_parser.IncludeStatement):
            path = _included_file(statement.filename)
            if path and path not in seen:
                seen.add(path)
                yield from _outside_imports(_read_gin_text(path), f"gin file {path}", seen)


def _included_file(name: str):
    """The file an `include` names, searched as gin searches (location prefixes); None if gin
    will not find it either (gin's parse then names it)."""
    prefixes = [""] if os.path.isabs(name) else gin.config._LOCATION_PREFIXES
    for prefix in prefixes:
        if _is_gin_file(os.path.join(prefix, name)):
            return files.absolute(os.path.join(prefix, name))
    return None


def check_imports(paths: Sequence[str], bindings: Sequence[str]) -> None:
    """Raises ImportRefused naming the first import outside basic_tf in the files (and their
    includes) or bindings, before any of them is parsed (so before any of their code runs)."""
    seen = set()
    sources = []
    for path in paths:
        sources.append((_read_gin_text(path), f"gin file {path}"))
        seen.add(files.absolute(path))
    sources += [(binding, f"gin binding {binding!r}") for binding in bindings]
    for text, source in sources:
        with _naming(source):   # a syntax error is named as parse() would name it
            refused = next(_outside_imports(text, source, seen), None)
        if refused:
            where, line_num, line, module = refused
            raise ImportRefused(
                f"{where} line {line_num}: {line!r} imports {module!r}, outside basic_tf. A gin "
                "file is Python code that runs when it is parsed (an import can reach any "
                "function, os.system included); if you trust this file, pass "
                "--gin_allow_imports")


def parse(gin_files: Iterable[str] | str, bindings: Sequence[str] = (), finalize: bool = False,
          allow_imports: bool = False) -> None:
    """Registers every configurable, clears previous config and parses files then bindings.

    allow_imports: accept `import` statements outside basic_tf (check_imports refuses them).
    """
    register_configurables()
    if isinstance(gin_files, str):
        gin_files = [gin_files]
    gin.clear_config()
    _search_gin_dir_first()
    _read_any_filesystem()
    paths = [resolve_gin_file(f) for f in gin_files]
    if not allow_imports:
        check_imports(paths, bindings)
    for path in paths:
        with _naming(f"gin file {path}"):
            gin.parse_config_file(path, skip_unknown=False)
    for binding in bindings:
        with _naming(f"gin binding {binding!r}"):
            gin.parse_config(binding, skip_unknown=False)
    if finalize:
        gin.finalize()


# Configurables that are gone, and where their bindings went (an old gin file is told).
MOVED = {"compute_contrastive_step": "train.num_micro_batches",
         "contrastive_loss": "train.loss_kind and train.local_loss",
         "remat_policy": "train.remat ('none', 'every_block' or 'every_k:K')"}


class ConfigError(ValueError):
    """A gin file or binding that does not parse; the message's first line names it."""


class ImportRefused(ConfigError):
    """A gin import outside basic_tf without allow_imports; the first line names file and line."""


@contextlib.contextmanager
def _naming(source: str):
    """Re-raises gin's parse errors (SyntaxError, tokenize.TokenError, ValueError for an unknown
    configurable) as ConfigError whose first line names `source`, the line and the problem."""
    try:
        yield
    except (SyntaxError, tokenize.TokenError, ValueError) as e:
        if isinstance(e, SyntaxError):
            where = f" line {e.lineno}: {(e.text or '').strip()!r}" if e.lineno else ""
            problem = f"syntax error ({e.msg}){where}"
        elif isinstance(e, tokenize.TokenError):
            problem = f"syntax error ({e.args[0]}, line {e.args[1][0]})"
        else:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            problem = " ".join(lines[:3])
            moved = [f"{name}.* is now {where}" for name, where in MOVED.items()
                     if f"No configurable matching '{name}'" in lines[0]]
            problem = "; ".join([problem] + moved)
        raise ConfigError(f"{source}: {problem}") from None


def operative_config_str() -> str:
    """The bindings actually used so far (gin's operative config)."""
    return gin.operative_config_str()


def config_str() -> str:
    """Every binding parsed, used or not."""
    return gin.config_str()


def bound_value(name: str, default):
    """The value the parsed gin files bind to `name` ("fn.param"), or `default` when unbound.

    Macros and references are resolved the way gin resolves them when it calls `fn`
    (`make_dataset.seq_len = %SEQ_LEN` reads as 24, not as a ConfigurableReference).
    """
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    # gin evaluates %MACRO / @fn() references by deep-copying the bound value (its
    # ConfigurableReference.__deepcopy__); the injected argument is made the same way.
    return copy.deepcopy(value)
