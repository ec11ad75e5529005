"""Gin files on any tf.io.gfile filesystem: `--gin_file=gs://bucket/exp.gin` and the files it
includes by URL parse, pass the import check, and a missing one is named on the first line.
TensorFlow's ram:// filesystem stands in for a bucket: os.path and open see neither."""
import uuid

import pytest
import tensorflow as tf

from basic_tf import config


@pytest.fixture
def ram_dir():
    folder = f"ram://gin_{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(folder)
    return folder


def _write(path: str, text: str) -> str:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return path


def test_a_gin_file_on_a_url_parses_with_its_url_and_shipped_includes(ram_dir, caplog):
    base = _write(f"{ram_dir}/base.gin", "include 'models/tiny.gin'\n"
                                         "dual_encoder_config.embed_dim = 48\n")
    exp = _write(f"{ram_dir}/exp.gin", f"include '{base}'\ncoatnet_config.dropout_rate = 0.25\n")
    config.parse([exp])
    assert config.bound_value("dual_encoder_config.embed_dim", None) == 48       # the URL include
    assert config.bound_value("coatnet_config.stem_width", None) == 16           # models/tiny.gin
    assert config.bound_value("coatnet_config.dropout_rate", None) == 0.25       # the file itself
    # gin's package-path reader, asked about a URL, would log "Path not found" per search prefix.
    assert not [r for r in caplog.records if "Path not found" in r.getMessage()]


def test_an_import_in_a_url_include_is_refused(ram_dir):
    inner = _write(f"{ram_dir}/inner.gin", "include 'models/tiny.gin'\nimport subprocess\n")
    outer = _write(f"{ram_dir}/outer.gin", f"include '{inner}'\n")
    with pytest.raises(config.ImportRefused,
                       match=rf"^gin file {inner} line 2: 'import subprocess' imports "
                             r"'subprocess', outside basic_tf"):
        config.parse([outer])


def test_a_missing_url_gin_file_or_include_is_named_first(ram_dir):
    missing = f"{ram_dir}/missing.gin"
    with pytest.raises(FileNotFoundError, match=rf"^gin file '{missing}' not found"):
        config.parse([missing])
    outer = _write(f"{ram_dir}/outer.gin", f"include 'models/tiny.gin'\ninclude '{missing}'\n")
    with pytest.raises(OSError, match=rf"^Unable to open file: {missing}\."):   # gin's own
        config.parse([outer])
