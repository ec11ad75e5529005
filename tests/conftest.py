"""Test setup shared by every test: 8 virtual CPU devices, made before TensorFlow initialises.

Multi-device behaviour is tested on CPU: MirroredStrategy over 4 of these devices stands in for
TPUStrategy, and DTensor meshes use all 8.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_VIRTUAL_CPUS = 8

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_VIRTUAL_CPUS)])
