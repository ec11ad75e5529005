"""Test setup shared by every test: 8 virtual CPU devices, made before TensorFlow initialises.

Multi-device behaviour is tested on CPU: MirroredStrategy over 4 of these devices stands in for
TPUStrategy, and DTensor meshes use all 8.

Grappler stays on in the test processes (it is off only where DTensor compiles per-device
functions: training/mesh_placement.py, tests/parallel/dtensor_child.py). Turning it off here
(`disable_meta_optimizer`) saved nothing measurable on 2026-12-08 (`pytest -n 0`, load 1.0-1.3):
test_accumulation.py 140.2 s -> 134.6 s, test_accumulation_chunked.py + test_faults_guard.py
223.8 s -> 231.6 s; an in-process test's time is Python tracing, not graph optimisation.
"""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tools and children the tests start import this checkout's basic_tf, not whichever copy
# `pip install -e` last pointed at (a second clone on the same machine).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import tensorflow as tf  # noqa: E402

NUM_VIRTUAL_CPUS = 8

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_VIRTUAL_CPUS)])


@pytest.fixture(autouse=True, scope="module")
def _gin_config_cleared_per_module():
    """Each test file starts from an empty gin config: xdist runs several files in one process,
    and bindings a file parsed (e.g. coatnet_config.stages of models/tiny.gin) must not change the
    defaults another file relies on, or what a child process it starts sees."""
    import gin
    gin.clear_config()
    yield
