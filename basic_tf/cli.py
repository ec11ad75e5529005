"""What every command does before and around its absl `main`, and the installed `basic-*` commands.

Each program in tools/ imports this module first and ends with `cli.run(main)`: TensorFlow's C++
start-up lines are hidden, `--help` exits with status 0. Importing this module sets
TF_CPP_MIN_LOG_LEVEL (see `quiet_tensorflow_logs`), so it comes before anything that imports
TensorFlow: TensorFlow reads the variable once, when it loads.

The flags several commands share are defined here, once, by the `define_*_flags` functions a
program calls at its top (nothing is defined at import): the gin flags (--gin_file,
--gin_bindings), the tf.distribute strategy (--strategy, --tpu), the trained model and its input
view (--checkpoint, --untrained, --tokenizer, --seq_len) and the zero-shot classes (--class_names,
--templates, --labels_by_name). The `*_from_flags` functions read them back.

The console scripts of setup.py (`basic-train`, ...) call the functions at the end of this file,
which run the very file tools/<name>.py as `__main__` (as `python3 tools/<name>.py` does, so its
docstring is the help): from basic_tf/tools/ in an installed package (setup.py copies tools/
there), from the checkout's tools/ in an editable install.
"""
import glob
import os
import runpy
import sys
from typing import Callable, Optional, Sequence, Tuple

from absl import flags

FLAGS = flags.FLAGS
flags.disclaim_key_flags()   # flags defined here belong to the program that asks: in its --help
# absl's flags that print help then call sys.exit(1).
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def quiet_tensorflow_logs() -> str:
    """Sets TF_CPP_MIN_LOG_LEVEL unless the user did; returns the level in effect.

    TensorFlow's C++ start-up lines (CPU features, oneDNN, "could not find cuda drivers") are
    INFO/WARNING: level 2 hides them. On a machine without an NVIDIA device, TensorFlow also logs
    an ERROR ("failed call to cuInit: ... UNKNOWN ERROR (303)") that only means "no GPU": level 3
    there. Python errors are unaffected; TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    """
    default = "2" if glob.glob("/dev/nvidia[0-9]*") else "3"
    return os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", default)


def asked_for_help(argv) -> bool:
    """True when argv (program name first) holds one of absl's help flags before `--`."""
    for arg in argv[1:]:
        if arg == "--":
            return False
        if arg.split("=", 1)[0] in HELP_FLAGS:
            return True
    return False


def run(main: Callable) -> None:
    """absl `app.run(main)` with quiet TensorFlow logs and exit status 0 after --help; the
    docstring of `main`'s module is the help when __main__ has none (basic-demo's wrapper)."""
    quiet_tensorflow_logs()
    from absl import app

    main_module = sys.modules["__main__"]
    if not getattr(main_module, "__doc__", None) and main.__module__ in sys.modules:
        main_module.__doc__ = sys.modules[main.__module__].__doc__   # absl prints this as help
    help_asked = asked_for_help(sys.argv)
    try:
        app.run(main)
    except SystemExit as e:
        if help_asked and e.code == 1:     # absl exits 1 after printing the help it was asked
            raise SystemExit(0) from None
        raise


def error_text(error: BaseException) -> str:
    """The message of an error for a person, without the line gin appends to errors raised inside
    a configurable ("In call to configurable 'write_tfrecords' (<function ...>)")."""
    return str(error).split("\n  In call to configurable")[0]


def define_gin_flags(default_files: Sequence[str] = (),
                     example: str = "'train.train_steps = 1000'", flag_values=FLAGS) -> None:
    """--gin_file (repeatable; `default_files` when none is given) and --gin_bindings."""
    flags.DEFINE_multi_string("gin_file", list(default_files), "Gin file(s), parsed in order: a "
                              "path or a name in gin/, e.g. tiny", flag_values=flag_values)
    flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings, applied after the gin "
                              f"files, e.g. {example}", flag_values=flag_values)
    flags.DEFINE_bool("gin_allow_imports", False, "Accept `import` lines outside basic_tf in gin "
                      "files and bindings. A gin file is Python code: an import makes any "
                      "function callable from it (os.system included), so only for files you "
                      "trust; refused by default, naming the file and line.",
                      flag_values=flag_values)


def parse_gin_flags(flag_values=FLAGS) -> None:
    """Parses --gin_file then --gin_bindings (basic_tf.config.parse: errors name the file or
    binding on their first line), then applies the cpu_threads bindings, which must come before
    TensorFlow's runtime starts (basic_tf/parallel/threads.py)."""
    from basic_tf import config, from_gin
    config.parse(flag_values.gin_file, flag_values.gin_bindings,
                 allow_imports=flag_values.gin_allow_imports)
    from_gin.cpu_threads()


def define_strategy_flags(flag_values=FLAGS) -> None:
    """--strategy and --tpu (basic_tf/parallel/strategy.py)."""
    flags.DEFINE_string("strategy", "default", "default | one_device | mirrored[:N] | "
                        "multi_worker_mirrored | tpu (basic_tf/parallel/strategy.py).",
                        flag_values=flag_values)
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu (unset, '' "
                        "or local: this TPU VM's chips); an unreachable TPU fails in seconds "
                        "naming what to check (basic_tf/parallel/tpu.py).",
                        flag_values=flag_values)


def strategy_from_flags(flag_values=FLAGS):
    """The tf.distribute.Strategy that --strategy and --tpu name."""
    from basic_tf import from_gin
    from basic_tf.parallel.strategy import parse_strategy_flag
    return from_gin.make_strategy(**parse_strategy_flag(flag_values.strategy),
                                  tpu=flag_values.tpu)


def define_trained_model_flags(flag_values=FLAGS) -> None:
    """--checkpoint / --untrained / --allow_unverified (the weights), --tokenizer / --seq_len (the
    text view; the images' view is the gin file's make_dataset bindings), --allow_other_tokenizer."""
    flags.DEFINE_string("checkpoint", None, "Trained weights: a training model_dir (its latest "
                        "checkpoint), a checkpoint prefix (<model_dir>/ckpt-1000) or a Keras "
                        ".weights.h5 file.", flag_values=flag_values)
    flags.DEFINE_bool("untrained", False, "Use freshly initialised weights (smoke tests only).",
                      flag_values=flag_values)
    flags.DEFINE_bool("allow_unverified", False, "Load --checkpoint even when it is no verified "
                      "state of its run: under <model_dir>/unverified/ (set aside when training "
                      "stopped for skipped steps) or past the newest checkpoint its index "
                      "lists.", flag_values=flag_values)
    flags.DEFINE_string("tokenizer", None, "SentencePiece .model; default: gin "
                        "make_dataset.tokenizer_path.", flag_values=flag_values)
    flags.DEFINE_integer("seq_len", None, "Token ids per text; default: gin "
                         "make_dataset.seq_len (as in training).", flag_values=flag_values)
    flags.DEFINE_bool("allow_other_tokenizer", False, "Use a tokenizer other than the one the "
                      "checkpoint was trained with (its fingerprint in <model_dir>/tokenizer.json);"
                      " refused by default: the same words would get other ids.",
                      flag_values=flag_values)


def checkpoint_from_flags(*also: str, flag_values=FLAGS) -> Tuple[Optional[str], str]:
    """(value, '--flag') of the first of --checkpoint and the flags `also` (e.g. 'model_dir')
    that is set; (None, '--untrained') with --untrained; a UsageError naming them otherwise."""
    for name in ("checkpoint",) + also:
        if flag_values[name].value:
            return flag_values[name].value, f"--{name}"
    if flag_values.untrained:
        return None, "--untrained"
    from absl import app
    raise app.UsageError(f"give --{' or --'.join(('checkpoint',) + also)} (or --untrained)")


def define_class_flags(flag_values=FLAGS) -> None:
    """--class_names, --templates and --labels_by_name: the zero-shot classes."""
    flags.DEFINE_string("class_names", None, "Class names: a set shipped in "
                        "basic_tf/zeroshot/data (e.g. imagenet1k, fashion_mnist) or a .txt/.json "
                        "file, in label order.", flag_values=flag_values)
    flags.DEFINE_string("templates", None, "Prompt templates, '{c}' = the class name: a shipped "
                        "set (e.g. imagenet1k) or a .txt/.json file.", flag_values=flag_values)
    flags.DEFINE_bool("labels_by_name", False, "Match --class_names to the labelled records' "
                      "label names by name (any order); default: they must already be in the "
                      "records' label order.", flag_values=flag_values)


def tool_path(name: str) -> str:
    """The file of the program `name` ('train'): <package>/tools/<name>.py when installed, else
    <checkout>/tools/<name>.py."""
    package = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(folder, f"{name}.py")
                  for folder in (os.path.join(package, "tools"),
                                 os.path.join(os.path.dirname(package), "tools"))]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"command {name!r}: no program at {candidates}; reinstall basic_tf "
                            "(pip install .)")


def run_tool(name: str) -> None:
    """Runs tools/<name>.py as the __main__ module, with this process's arguments."""
    runpy.run_path(tool_path(name), run_name="__main__")


# The console scripts of setup.py: basic-<name with dashes> runs tools/<name>.py.
def train(): run_tool("train")                          # noqa: E704
def evaluate(): run_tool("evaluate")                    # noqa: E704
def export(): run_tool("export")                        # noqa: E704
def make_tfrecords(): run_tool("make_tfrecords")        # noqa: E704
def train_tokenizer(): run_tool("train_tokenizer")      # noqa: E704
def new_experiment(): run_tool("new_experiment")        # noqa: E704
def plan(): run_tool("plan")                            # noqa: E704
def serving_client(): run_tool("serving_client")        # noqa: E704


quiet_tensorflow_logs()
