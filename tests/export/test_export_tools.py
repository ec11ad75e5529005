"""The export tools explain themselves (--help) without importing TensorFlow."""
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("tool, words", [
    ("export.py", ["--checkpoint", "--class_names", "--templates", "--export_dir",
                   "models.config"]),
    ("serving_client.py", ["--server", "--protocol", "--signature", "classify_with_labels"]),
])
def test_tool_help(repo_root, tool, words):
    proc = subprocess.run([sys.executable, os.path.join(repo_root, "tools", tool), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr   # absl's --help exits with 1
    assert "Example" in proc.stdout                  # the module docstring leads the help
    for word in words:
        assert word in proc.stdout
    assert "tensorflow" not in proc.stderr.lower()
