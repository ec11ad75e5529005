"""Every file basic_tf/ and tools/ read or write for a user goes through tf.io.gfile.

A scan of the source (no TensorFlow): a call that touches the local filesystem only (`open`,
`os.path.isfile`, `os.makedirs`, `shutil`, `glob`, `pathlib`, ...) or that mangles a bucket path
(`os.path.abspath("gs://b/x")` is "<cwd>/gs:/b/x") fails this test unless ALLOWED names its file
and the reason it never sees a user path. String-only helpers (`os.path.join`, `basename`,
`dirname`, `split`, `splitext`) are correct on "gs://..." under POSIX and are not flagged.
Use basic_tf.files (`absolute`, `write_atomically`, ...) or tf.io.gfile instead.
"""
import ast
import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Calls that read the local disk only, or turn "gs://b/x" into a wrong path.
_OS_PATH = {"exists", "isfile", "isdir", "islink", "lexists", "getsize", "getmtime", "getctime",
            "abspath", "realpath", "normpath", "relpath", "commonpath", "isabs", "samefile"}
_OS = {"makedirs", "mkdir", "listdir", "scandir", "walk", "remove", "unlink", "rename",
       "replace", "rmdir", "removedirs", "stat", "chdir"}
_MODULES = {"shutil", "glob", "pathlib"}       # any use of these
_OPENERS = {"gzip.open", "np.load", "numpy.load", "tarfile.open", "zipfile.ZipFile"}

# (file, call) -> why it never touches a user's file. Keep each reason true.
ALLOWED = {
    ("basic_tf/cli.py", "glob.glob"): "/dev/nvidia* probe of this host's GPUs",
    ("basic_tf/cli.py", "os.path.abspath"): "locates the tools/ shipped with the package",
    ("basic_tf/cli.py", "os.path.isfile"): "locates the tools/ shipped with the package",
    ("basic_tf/config.py", "os.path.abspath"): "the package's own folder (__file__)",
    ("basic_tf/config.py", "os.path.isdir"): "the package's gin/ folder",
    ("basic_tf/config.py", "os.path.isfile"): "`_is_gin_file`: after the URL test (a URL goes "
    "to tf.io.gfile)",
    ("basic_tf/config.py", "os.listdir"): "lists the package's gin/ folder",
    ("basic_tf/config.py", "os.path.isabs"): "gin file lookup on gin's local search path",
    ("basic_tf/config.py", "open"): "`_read_gin_text`: a local gin file, after the URL test "
    "(a URL is read with tf.io.gfile.GFile)",
    ("basic_tf/zeroshot/prompts.py", "os.path.abspath"): "the package's zeroshot/data folder",
    ("basic_tf/zeroshot/prompts.py", "open"): "JSON shipped in basic_tf/zeroshot/data",
    ("basic_tf/files.py", "os.path.abspath"): "`absolute`/`normalized`: local paths only",
    ("basic_tf/files.py", "os.path.normpath"): "`normalized`: local paths only",
    ("basic_tf/files.py", "os.path.isabs"): "`is_absolute`: after the URL test",
    ("basic_tf/training/checkpoints.py", "os.path.isabs"): "mirrors TF's own test in "
    "generate_checkpoint_state_proto (a gs:// model_dir takes the relative branch in both)",
    ("tools/serving_client.py", "open"): "the client machine's image files, read without "
    "importing TensorFlow (the REST client stays light)",
}


def _dotted(node) -> str:
    """'os.path.isfile' for the expression os.path.isfile; '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _flagged(name: str) -> bool:
    head, _, last = name.rpartition(".")
    return (name == "open" or name in _OPENERS
            or (head == "os.path" and last in _OS_PATH) or (head == "os" and last in _OS)
            or name.split(".")[0] in _MODULES or name in ("Path", "PurePath"))


def local_file_calls(source: str, filename: str = "<source>") -> list:
    """[(line, call)] of the flagged calls in `source` (also `from glob import glob` etc.)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            from_memory = (name in _OPENERS and (any(k.arg == "fileobj" for k in node.keywords)
                           or (node.args and isinstance(node.args[0], ast.Call))))
            if name and _flagged(name) and not from_memory:   # np.load(io.BytesIO(...)) is fine
                found.append((node.lineno, name))
            elif any(k.arg == "model_file" for k in node.keywords):   # SentencePiece from disk
                found.append((node.lineno, "model_file="))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _MODULES:
            found.append((node.lineno, f"from {node.module} import"))
    return sorted(found)


def _sources():
    for top in ("basic_tf", "tools"):
        for folder, _, names in os.walk(os.path.join(_REPO, top)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, _REPO).replace(os.sep, "/"), path


def test_no_local_file_call_outside_the_allowlist():
    bad, used = [], set()
    for rel, path in _sources():
        with open(path, encoding="utf-8") as f:
            for line, call in local_file_calls(f.read(), rel):
                if (rel, call) in ALLOWED:
                    used.add((rel, call))
                else:
                    bad.append(f"{rel}:{line}: {call}")
    assert not bad, ("local-only file calls on what may be a user's gs:// path (use "
                     "tf.io.gfile / basic_tf.files, or add (file, call): reason to ALLOWED):\n"
                     + "\n".join(bad))
    assert not set(ALLOWED) - used, f"stale ALLOWED entries: {sorted(set(ALLOWED) - used)}"


def test_the_scan_sees_each_kind_of_call():
    source = ("import glob, os, shutil\nfrom pathlib import Path\n"
              "open('x')\nos.path.isfile('x')\nos.makedirs('x')\nshutil.rmtree('x')\n"
              "glob.glob('x')\nPath('x')\nos.path.abspath('x')\nnp.load('x')\n"
              "spm.SentencePieceProcessor(model_file='x')\n"
              "os.path.join('gs://b', 'x')\ntf.io.gfile.exists('x')\n")
    assert [c for _, c in local_file_calls(source)] == [
        "from pathlib import", "open", "os.path.isfile", "os.makedirs", "shutil.rmtree",
        "glob.glob", "Path", "os.path.abspath", "np.load", "model_file="]
