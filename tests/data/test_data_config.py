"""The one data config: make_dataset's values as gin injects them, macros resolved (built at the
top: basic_tf/from_gin_data.py data_config)."""
import gin
import pytest

from basic_tf import config
from basic_tf.from_gin_data import data_config


@pytest.fixture
def demo():
    config.parse(["demo"], ["make_dataset.tokenizer_path = '/x/sp.model'"])
    yield
    gin.clear_config()


def test_demo_macros_are_resolved(demo):
    """demo.gin binds make_dataset.seq_len = %SEQ_LEN: read back as 32, not a reference."""
    data = data_config()
    assert (data.image_size, data.seq_len, data.channels) == (28, 32, 3)
    assert (data.tokenizer_path, data.eval_crop_fraction, data.antialias) == (
        "/x/sp.model", 1.0, False)
    assert data.source("seq_len") == "gin" and data.source("antialias") == "make_dataset default"
    assert config.bound_value("make_dataset.seq_len", None) == 32
    assert data.check_model(28, 32) is data


def test_training_gets_the_same_values(tmp_path):
    """The batches make_dataset builds under the demo config have the data config's shapes."""
    from basic_tf.data import writer
    from basic_tf.from_gin_data import make_dataset
    from basic_tf.data.tokenizer import train_sentencepiece
    from data_helpers import make_records

    shards = writer.write_tfrecords(make_records(3), str(tmp_path / "train"),
                                    show_progress=False).shards
    spm = train_sentencepiece([f"a photo number {i}" for i in range(40)], str(tmp_path / "sp"),
                              vocab_size=30)
    config.parse(["demo"], [f"make_dataset.file_pattern = {shards!r}",
                            f"make_dataset.tokenizer_path = '{spm}'"])
    try:
        data = data_config()
        batch = next(iter(make_dataset(training=False)))
        assert batch["images"].shape[1:] == [data.image_size, data.image_size, data.channels]
        assert batch["token_ids"].shape[1] == data.seq_len == 32
    finally:
        gin.clear_config()


def test_flags_override_and_errors_name_the_binding(demo):
    data = data_config(seq_len=16, tokenizer_path="/y.model")
    assert (data.seq_len, data.tokenizer_path, data.source("seq_len")) == (16, "/y.model", "flag")
    with pytest.raises(ValueError, match=r"make_dataset.image_size=28 \(gin\) differs from the "
                                         r"model's dual_encoder_config.image_size=32"):
        data.check_model(32, 24)
    with pytest.raises(ValueError, match=r"make_dataset.seq_len=16 \(flag\) is longer than the "
                                         r"text tower's text_tower_config.max_len=8"):
        data.check_model(28, 8)
    with pytest.raises(ValueError, match=r"make_dataset.seq_len=1 \(flag\) must be an integer"):
        data_config(seq_len=1)


def test_unbound_values_are_make_dataset_defaults():
    config.parse(["models/tiny"])
    try:
        data = data_config()
        assert (data.image_size, data.seq_len, data.tokenizer_path) == (224, 64, None)
        assert data.source("image_size") == "make_dataset default"
        with pytest.raises(ValueError, match="make_dataset.tokenizer_path is not bound"):
            data.require_tokenizer()
    finally:
        gin.clear_config()
