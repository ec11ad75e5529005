"""Fixtures of the training tests: tiny shards and tokenizer, written once per session."""
import pytest

from training_helpers import write_tiny_data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    return write_tiny_data(str(tmp_path_factory.mktemp("tiny_data")))
