"""gin stays at the top: no module under basic_tf/ reads gin except the top layer.

The allowlist (TOP) is the top layer, where gin meets the library and nothing below it:
  basic_tf/config.py         parses gin files and bindings (the one entry to gin)
  basic_tf/from_gin.py       registers the models' and training's config objects, builds them
  basic_tf/from_gin_data.py  registers the data, zero-shot and export functions, configures them
  basic_tf/cli.py            the tools' flags (--gin_file / --gin_bindings)
  basic_tf/demo.py           an application (basic-demo): binds its own data paths
  basic_tf/new_experiment.py an application (basic-new-experiment): writes gin files
tools/ are the top too (outside basic_tf/, not scanned). Every other module takes its settings
as arguments (issue 20), so its behaviour never depends on what gin holds and it can be read,
tested and reused without a gin config.

The scan reads every module's source (nothing is imported, no TensorFlow: milliseconds): a
module outside TOP that imports gin, basic_tf.config or basic_tf.from_gin*, or calls `gin.*`,
fails it, and so does an entry of TOP that no longer reads gin (the list only shrinks)."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = {
    "basic_tf/cli.py": "the tools' flags: --gin_file / --gin_bindings",
    "basic_tf/config.py": "parses gin files and bindings",
    "basic_tf/from_gin.py": "builds the models' and training's config objects from the bindings",
    "basic_tf/from_gin_data.py": "configures the data, zero-shot and export functions",
    "basic_tf/demo.py": "an application (basic-demo): binds its own data paths",
    "basic_tf/new_experiment.py": "an application (basic-new-experiment): writes gin files",
}
GIN_MODULES = {"gin", "basic_tf.config", "basic_tf.from_gin", "basic_tf.from_gin_data"}


def reads_gin(path: str) -> list:
    """The lines of `path` that import gin (or the modules that read it) or call gin.*."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [node.value.id] if node.value.id == "gin" else []
        else:
            continue
        if any(n.split(".")[0] == "gin" or n in GIN_MODULES for n in names):
            lines.append(node.lineno)
    return sorted(set(lines))


def _library_modules() -> list:
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, "basic_tf")):
        found += [os.path.relpath(os.path.join(folder, f), REPO).replace(os.sep, "/")
                  for f in files if f.endswith(".py")]
    return sorted(found)


def test_gin_is_read_only_at_the_top():
    readers = {m: reads_gin(os.path.join(REPO, m)) for m in _library_modules()}
    unexpected = {m: lines for m, lines in readers.items() if lines and m not in TOP}
    assert not unexpected, (f"these modules read gin below the top (lines): {unexpected}; take "
                            "the setting as an argument and configure it in basic_tf/from_gin.py "
                            "or basic_tf/from_gin_data.py")
    stale = sorted(m for m in TOP if not readers.get(m))
    assert not stale, f"{stale} no longer read gin: remove them from TOP"


def test_the_scan_sees_each_way_of_reading_gin(tmp_path):
    """reads_gin finds an import of gin or of a top module, and a gin.* call; not a name that
    merely contains 'gin'."""
    cases = {"import gin\n": [1], "from gin import config\n": [1],
             "from basic_tf import config\n": [1], "from basic_tf.from_gin_data import x\n": [1],
             "import basic_tf.from_gin\n": [1], "x = 1\ngin.bind_parameter('a.b', 1)\n": [2],
             "origin = 'gin'\nimport basic_tf.data\n": []}
    for i, (source, lines) in enumerate(cases.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(source, encoding="utf-8")
        assert reads_gin(str(path)) == lines, source
