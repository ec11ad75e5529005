"""A non-editable install of the checkout (pip install --target, no network) provides every
`basic-*` command, and they work from a directory outside the checkout: --help exits 0, gin files
given by name (tiny) come from the installed package."""
import os
import shutil
import subprocess
import sys

import pytest

# Slow: pip-installs a copy of the checkout, then runs the installed commands.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ["basic-train", "basic-evaluate", "basic-export", "basic-make-tfrecords",
            "basic-train-tokenizer", "basic-new-experiment", "basic-plan",
            "basic-serving-client", "basic-demo"]
SKIP = shutil.ignore_patterns(".git", "__pycache__", "build", "*.egg-info", ".pytest_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin dir, environment) of a fresh `pip install --no-deps --target` of a copy of the
    checkout (pip builds in the source tree: the copy keeps build/ out of the checkout)."""
    root = tmp_path_factory.mktemp("install")
    source, target = root / "source", root / "site"
    shutil.copytree(REPO, source, ignore=SKIP)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                           "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(source)    # the install must not need the source
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(target)   # before site-packages (and any editable install of basic_tf)
    return target / "bin", env, root


def test_every_command_helps_with_status_0_outside_the_checkout(installed):
    bin_dir, env, root = installed
    outside = root / "elsewhere"
    outside.mkdir()
    for command in COMMANDS:
        proc = subprocess.run([str(bin_dir / command), "--help"], capture_output=True, text=True,
                              env=env, cwd=outside, timeout=120)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (command, proc.stderr[-2000:])
        # the tool's docstring, not absl's bare "USAGE: <script> [flags]"
        assert not proc.stdout.lstrip().startswith("USAGE"), (command, proc.stdout[:300])
        assert "--" in proc.stdout, command


def test_installed_package_is_used_and_ships_gin_files(installed):
    bin_dir, env, root = installed
    proc = subprocess.run([sys.executable, "-c", "import basic_tf.config as c; print(c.__file__);"
                           " print(c.resolve_gin_file('tiny'));"
                           " print(c.resolve_gin_file('models/tiny'))"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=60)
    assert proc.returncode == 0, proc.stderr
    module, tiny, model = proc.stdout.split()
    for path in (module, tiny, model):
        assert path.startswith(str(root / "site")), path


def test_basic_train_finds_the_packaged_tiny_gin(installed):
    """--gin_file=tiny parses from the package, its `include 'models/tiny.gin'` too, and
    training starts; it stops where the data are missing, naming them."""
    bin_dir, env, root = installed
    missing = root / "no_data" / "train-*.tfrecord"
    proc = subprocess.run([str(bin_dir / "basic-train"), "--gin_file=tiny",
                           f"--model_dir={root / 'run'}", "--gin_bindings=train.train_steps = 1",
                           f"--gin_bindings=make_dataset.file_pattern = '{missing}'"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(missing) in proc.stderr, proc.stderr[-2000:]
    assert "Unable to open file" not in proc.stderr and "Path not found" not in proc.stderr
