"""gin stays at the top: basic_tf/from_gin.py builds the config objects from an experiment's
bindings, and the modules below it take them as arguments.

`test_gin_is_read_only_at_the_top` reads every module's imports and calls (no import needed):
a module outside GIN_READERS that imports gin, basic_tf.config or basic_tf.from_gin, or calls
`gin.*`, fails it, and so does an entry of GIN_READERS that no longer reads gin (the list only
shrinks)."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The top: where gin meets the library.
TOP = {
    "basic_tf/cli.py": "the tools' flags: --gin_file / --gin_bindings",
    "basic_tf/config.py": "parses gin files and bindings",
    "basic_tf/from_gin.py": "builds the config objects from the bindings",
    "basic_tf/demo.py": "an application (basic-demo): binds its own data paths",
    "basic_tf/new_experiment.py": "an application (basic-new-experiment): writes gin files",
}
# Below the top, still configured by gin (issue 20: to move to config objects built in
# from_gin.py). basic_tf/models/ and basic_tf/training/ are not here and must stay out.
NOT_YET_MOVED = {
    "basic_tf/data/data_config.py": "DataConfig read off make_dataset's bindings",
    "basic_tf/data/limits.py": "@gin.configurable image limits",
    "basic_tf/data/pipeline.py": "@gin.configurable make_dataset",
    "basic_tf/data/sources.py": "@gin.configurable sources",
    "basic_tf/data/writer.py": "@gin.configurable writer",
    "basic_tf/export/exporter.py": "@gin.configurable export_for_serving",
    "basic_tf/export/inputs.py": "@gin.configurable serving inputs",
    "basic_tf/parallel/dtensor/layouts.py": "@gin.configurable layout_rules",
    "basic_tf/parallel/dtensor/mesh.py": "@gin.configurable make_mesh",
    "basic_tf/parallel/strategy.py": "@gin.configurable make_strategy",
    "basic_tf/parallel/threads.py": "@gin.configurable cpu_threads",
    "basic_tf/planner.py": "@gin.configurable plan_step",
    "basic_tf/training/mesh_placement.py": "@gin.configurable make_training_mesh",
    "basic_tf/training/optimizers.py": "@gin.configurable make_optimizer",
    "basic_tf/training/progress.py": "writes gin's operative config",
    "basic_tf/training/schedules.py": "@gin.configurable learning_rate_schedule",
    "basic_tf/training/settings_diff.py": "compares gin configs on resume",
    "basic_tf/zeroshot/classifier.py": "@gin.configurable zero-shot classifier",
    "basic_tf/zeroshot/evaluation.py": "@gin.configurable evaluation",
    "basic_tf/zeroshot/inputs.py": "@gin.configurable evaluation datasets",
    "basic_tf/zeroshot/retrieval.py": "@gin.configurable retrieval",
    "basic_tf/zeroshot/run.py": "@gin.configurable zero-shot runs",
}
GIN_READERS = {**TOP, **NOT_YET_MOVED}
GIN_MODULES = {"gin", "basic_tf.config", "basic_tf.from_gin"}


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
    unexpected = {m: lines for m, lines in readers.items() if lines and m not in GIN_READERS}
    assert not unexpected, (f"these modules read gin below the top (lines): {unexpected}; take "
                            "the setting as an argument and build it in basic_tf/from_gin.py")
    stale = sorted(m for m in GIN_READERS if not readers.get(m))
    assert not stale, f"{stale} no longer read gin: remove them from GIN_READERS"
    assert not [m for m in GIN_READERS if m.startswith("basic_tf/models/")]


def test_models_and_their_from_config_never_read_gin():
    """The models take configs as arguments: the same model whatever gin holds."""
    from basic_tf import config, from_gin
    from basic_tf.models import DualEncoder
    config.parse(["models/tiny"])
    model = from_gin.dual_encoder()
    config.parse(["models/tiny"], ["dual_encoder_config.embed_dim = 8",
                                   "text_tower_config.max_len = 4"])
    again = DualEncoder.from_config(model.get_config())
    assert (again.embed_dim, again.max_text_len) == (model.embed_dim, model.max_text_len)
    assert from_gin.dual_encoder().embed_dim == 8
    with pytest.raises(TypeError):
        DualEncoder()  # no configs, no model: nothing is read from gin


def test_load_trained_model_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path):
    """evaluate, export and the demo load through one function; a tokenizer with more pieces
    than the text tower's table is refused, naming both (it used to be the demo's check only)."""
    from basic_tf import config, from_gin
    from basic_tf.data.tokenizer import Tokenizer, train_sentencepiece

    spm = train_sentencepiece([f"a photo number {i}" for i in range(40)], str(tmp_path / "sp"),
                              vocab_size=30)
    pieces = Tokenizer(spm, 16).vocab_size      # about 30: SentencePiece decides
    config.parse(["tiny"], ["make_dataset.image_size = 32", "make_dataset.seq_len = 16",
                            "text_tower_config.vocab_size = 20"])
    with pytest.raises(ValueError, match=rf"^tokenizer .*sp.model has {pieces} pieces but "
                       r"text_tower_config.vocab_size=20"):
        from_gin.load_trained_model(None, "--checkpoint", tokenizer_path=spm)
    config.parse(["tiny"], ["make_dataset.image_size = 32", "make_dataset.seq_len = 16"])
    model, tokenizer, data, restored = from_gin.load_trained_model(None, "--untrained",
                                                                   tokenizer_path=spm)
    assert (restored, data.seq_len, tokenizer.seq_len, model.image_size) == (None, 16, 16, 32)
