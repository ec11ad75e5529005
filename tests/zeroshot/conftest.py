"""Fixtures of the zero-shot tests (helpers live in zeroshot_helpers.py)."""
import keras
import pytest
import tensorflow as tf

from zeroshot_helpers import SEQ_LEN, StandInTextEncoder
from strategies import mirrored_strategy


@pytest.fixture(scope="session")
def text_encoder():
    keras.utils.set_random_seed(0)
    model = StandInTextEncoder()
    model(tf.zeros([1, SEQ_LEN], tf.int32))
    return model


@pytest.fixture(scope="session")
def mirrored4():
    """MirroredStrategy over 4 of the 8 virtual CPUs made by tests/conftest.py."""
    return mirrored_strategy(4)
