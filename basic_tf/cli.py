"""What every command does before and around its absl `main`, and the installed `basic-*` commands.

Each program in tools/ imports this module first and ends with `cli.run(main)`: TensorFlow's C++
start-up lines are hidden, `--help` exits with status 0. Importing this module sets
TF_CPP_MIN_LOG_LEVEL (see `quiet_tensorflow_logs`), so it comes before anything that imports
TensorFlow: TensorFlow reads the variable once, when it loads.

The console scripts of setup.py (`basic-train`, ...) call the functions at the end of this file,
which run the very file tools/<name>.py as `__main__` (as `python3 tools/<name>.py` does, so its
docstring is the help): from basic_tf/tools/ in an installed package (setup.py copies tools/
there), from the checkout's tools/ in an editable install.
"""
import glob
import os
import runpy
import sys
from typing import Callable

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
