"""A gin file is code: imports outside basic_tf are refused before anything is parsed."""
import pytest

from basic_tf import cli, config

# The attack tried on the old code (README "Reliability"): it wrote `id` into a file.
EVIL = """from __gin__ import dynamic_registration
import os
import basic_tf.training.loop as loop
os.system.command = 'id > {out}'
loop.train.train_steps = @os.system()
"""


def test_a_gin_file_importing_os_is_refused_and_runs_nothing(tmp_path):
    out = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.gin"
    evil.write_text(EVIL.format(out=out))
    with pytest.raises(config.ImportRefused,
                       match=rf"^gin file {evil} line 1: 'from __gin__ import "
                             r"dynamic_registration' imports '__gin__.dynamic_registration', "
                             r"outside basic_tf\. A gin file is Python code .*--gin_allow_imports"):
        config.parse([str(evil)])
    assert not out.exists()


def test_imports_in_included_files_and_bindings_are_refused(tmp_path):
    inner = tmp_path / "inner.gin"
    inner.write_text("include 'models/tiny.gin'\nimport subprocess\n")
    outer = tmp_path / "outer.gin"
    outer.write_text(f"include '{inner}'\n")
    with pytest.raises(config.ImportRefused,
                       match=rf"^gin file {inner} line 2: 'import subprocess' imports "
                             r"'subprocess', outside basic_tf"):
        config.parse([str(outer)])
    with pytest.raises(config.ImportRefused,
                       match=r"^gin binding 'import subprocess' line 1: 'import subprocess'"):
        config.parse(["models/tiny"], ["import subprocess"])


def test_basic_tf_imports_pass_and_allow_imports_accepts_the_rest(tmp_path):
    own = tmp_path / "own.gin"
    own.write_text("include 'models/tiny.gin'\nimport basic_tf.data.pipeline\n")
    config.parse([str(own)])
    trusted = tmp_path / "trusted.gin"
    trusted.write_text("include 'models/tiny.gin'\nimport math\n")
    with pytest.raises(config.ImportRefused):
        config.parse([str(trusted)])
    config.parse([str(trusted)], allow_imports=True)


def test_the_tools_refuse_unless_gin_allow_imports(tmp_path):
    from absl import flags
    trusted = tmp_path / "trusted.gin"
    trusted.write_text("include 'models/tiny.gin'\nimport math\n")
    fv = flags.FlagValues()
    cli.define_gin_flags(flag_values=fv)
    fv(["prog", f"--gin_file={trusted}"])
    with pytest.raises(config.ImportRefused, match=rf"^gin file {trusted} line 2"):
        cli.parse_gin_flags(flag_values=fv)
    fv.unparse_flags()
    fv(["prog", f"--gin_file={trusted}", "--gin_allow_imports"])
    cli.parse_gin_flags(flag_values=fv)


def test_every_shipped_gin_file_passes_the_import_check():
    import glob
    import os
    paths = sorted(glob.glob(os.path.join(config.GIN_DIR, "**", "*.gin"), recursive=True))
    assert len(paths) >= 6
    config.check_imports(paths, [])
