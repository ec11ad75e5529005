"""TF Serving's folder layout and models.config (parsed with tensorflow-serving-api's proto)."""
import os

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from basic_tf.export import layout


def _parse(text):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]


def test_models_config_text_parses_with_the_serving_proto():
    odd_path = '/data/"quoted"\\dir/m'
    assert _parse(layout.models_config_text({"b": "/models/b", "a.1": odd_path})) == [
        ("a.1", odd_path, "tensorflow"), ("b", "/models/b", "tensorflow")]


def test_write_models_config_lists_models_with_versions(tmp_path):
    for path in ["clip/1", "clip/3", "other/2", "empty", "clip/.tmp-4-x", "notes/readme"]:
        os.makedirs(tmp_path / path)
    assert layout.existing_versions(str(tmp_path / "clip")) == [1, 3]
    config = layout.write_models_config(str(tmp_path))
    assert config == str(tmp_path / "models.config")
    with open(config) as f:
        assert _parse(f.read()) == [("clip", str(tmp_path / "clip"), "tensorflow"),
                                    ("other", str(tmp_path / "other"), "tensorflow")]
    layout.write_models_config(str(tmp_path), base_path_prefix="/models/")
    with open(config) as f:
        assert [p for _, p, _ in _parse(f.read())] == ["/models/clip", "/models/other"]
    assert sorted(os.listdir(tmp_path)) == ["clip", "empty", "models.config", "notes", "other"]


def test_write_models_config_without_models_fails(tmp_path):
    with pytest.raises(ValueError, match="export a model first"):
        layout.write_models_config(str(tmp_path))


def test_resolve_version_path(tmp_path):
    root = str(tmp_path)
    assert layout.resolve_version_path(root, "m", None) == str(tmp_path / "m" / "1")
    os.makedirs(tmp_path / "m" / "1")
    os.makedirs(tmp_path / "m" / "7")
    assert layout.resolve_version_path(root, "m", None) == str(tmp_path / "m" / "8")
    assert layout.resolve_version_path(root, "m", 2) == str(tmp_path / "m" / "2")
    with pytest.raises(FileExistsError, match="version 7 of model 'm' already exists.*version=8"):
        layout.resolve_version_path(root, "m", 7)
    for bad in [0, -1, "2", True, 1.0]:
        with pytest.raises(ValueError, match="integers >= 1"):
            layout.resolve_version_path(root, "m", bad)
    for bad in ["", "a/b", "../m", ".hidden", "sp ace"]:
        with pytest.raises(ValueError, match="model_name="):
            layout.resolve_version_path(root, bad, None)


def test_staged_dir_renames_on_success_and_cleans_up_on_failure(tmp_path):
    final = str(tmp_path / "m" / "1")
    with layout.staged_dir(final) as staging:
        assert os.path.basename(staging).startswith(".tmp-1-")
        assert layout.existing_versions(str(tmp_path / "m")) == []   # invisible to the server
        with open(os.path.join(staging, "saved_model.pb"), "w") as f:
            f.write("x")
    assert os.listdir(tmp_path / "m") == ["1"]
    assert os.listdir(final) == ["saved_model.pb"]

    with pytest.raises(RuntimeError, match="boom"):
        with layout.staged_dir(str(tmp_path / "m" / "2")):
            raise RuntimeError("boom")
    assert os.listdir(tmp_path / "m") == ["1"]



def test_staging_left_by_a_killed_export_is_cleared_by_the_next(tmp_path):
    """Injected fault: an export killed by SIGKILL/SIGTERM leaves its hidden staging folder. The
    next export of that model removes it (ended process on this host, or the older name without
    a process id) and keeps a live export's folder and another host's."""
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    base = tmp_path / "m"
    stale = [f".tmp-3-{ended}-{host}-0123abcd", ".tmp-3-llq5vsal"]
    kept = [f".tmp-4-{os.getpid()}-{host}-89abcdef", f".tmp-5-{ended}-other-host-89abcdef"]
    for name in stale + kept:
        os.makedirs(base / name / "variables")
    with layout.staged_dir(str(base / "6")) as staging:
        assert os.path.basename(staging).startswith(f".tmp-6-{os.getpid()}-")
    assert sorted(os.listdir(base)) == sorted(kept + ["6"])


def test_staged_dir_on_a_url_filesystem_moves_file_by_file_saved_model_last(monkeypatch):
    """A bucket has no atomic folder rename (gs:// copies each object; ram://, the bucket's
    stand-in here, would rename only the folder's own entry and orphan its files): the version
    appears file by file, saved_model.pb last, so TF Serving, which loads a version only when its
    saved_model.pb is there, never loads a part of one."""
    import uuid

    import tensorflow as tf
    root = f"ram://export_{uuid.uuid4().hex[:8]}"
    final = f"{root}/m/1"
    renamed = []
    rename = tf.io.gfile.rename
    monkeypatch.setattr(tf.io.gfile, "rename",
                        lambda a, b, overwrite=False: (renamed.append(b), rename(a, b, overwrite)))
    files = {"saved_model.pb": "pb", "variables/variables.index": "i",
             "variables/variables.data-00000-of-00001": "d", "assets/serving.json": "{}"}
    with layout.staged_dir(final) as staging:
        assert staging.startswith(f"{root}/m/.tmp-1-")
        for name, text in files.items():
            tf.io.gfile.makedirs(os.path.dirname(f"{staging}/{name}"))
            with tf.io.gfile.GFile(f"{staging}/{name}", "w") as f:
                f.write(text)
    assert renamed[-1] == f"{final}/saved_model.pb" and len(renamed) == len(files)
    assert tf.io.gfile.listdir(f"{root}/m") == ["1"]                # the staging folder is gone
    for name, text in files.items():
        with tf.io.gfile.GFile(f"{final}/{name}") as f:
            assert f.read() == text
    assert layout.existing_versions(f"{root}/m") == [1]
