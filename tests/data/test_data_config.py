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
        batch = next(iter(make_dataset(None, training=False)))
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


def test_make_dataset_bindings_are_the_pipelines_arguments_with_data_spread():
    """gin's make_dataset names are pipeline.make_dataset's parameters with `data` replaced by
    DataConfig's fields, with DataConfig's defaults (gin.REQUIRED where there is none)."""
    import dataclasses
    import inspect

    from basic_tf.data import data_config as data_config_lib, pipeline
    from basic_tf.from_gin_data import make_dataset

    library = inspect.signature(pipeline.make_dataset).parameters
    configured = inspect.signature(make_dataset).parameters
    assert "data" in library and "data" not in configured
    assert set(configured) == set(library) - {"data"} | set(data_config_lib.FIELDS)
    defaults = {name: configured[name].default for name in data_config_lib.FIELDS}
    assert defaults == {"image_size": 224, "seq_len": 64, "tokenizer_path": gin.REQUIRED,
                        "eval_crop_fraction": 1.0, "antialias": False}
    assert data_config_lib.field_defaults()["tokenizer_path"] is dataclasses.MISSING
    assert configured["file_pattern"].default is gin.REQUIRED


def test_every_make_dataset_binding_parses_and_a_mistyped_one_is_refused():
    names = ["image_size = 8", "seq_len = 5", "tokenizer_path = 'x.model'",
             "eval_crop_fraction = 0.9", "antialias = True", "file_pattern = 'x*'",
             "eval_file_pattern = 'y*'", "global_batch_size = 4", "eval_global_batch_size = 8",
             "shuffle_buffer = 3", "seed = 1", "cycle_length = 1", "area_range = (0.9, 1.0)",
             "aspect_ratio_range = (1.0, 1.0)", "random_flip = False", "string_features = False",
             "log_skipped = False", "max_skipped_fraction = None",
             "record_format = 'img2dataset'"]
    try:
        config.parse(["models/tiny"], [f"make_dataset.{n}" for n in names])
        assert config.bound_value("make_dataset.eval_crop_fraction", None) == 0.9
        data = data_config()
        assert (data.image_size, data.seq_len, data.antialias) == (8, 5, True)
        gin.clear_config()
        with pytest.raises(config.ConfigError, match="'make_dataset' doesn't have a parameter "
                                                     "named 'image_sise'"):
            config.parse(["models/tiny"], ["make_dataset.image_sise = 3"])
    finally:
        gin.clear_config()


def test_an_unbound_tokenizer_or_a_bad_field_is_named_before_any_input_is_read():
    """The configured make_dataset refuses a missing tokenizer_path (gin's required binding)
    and pipeline.make_dataset a DataConfig out of range, naming the binding."""
    from basic_tf.data import pipeline
    from basic_tf.data.data_config import DataConfig
    from basic_tf.from_gin_data import make_dataset

    config.parse(["models/tiny"], ["make_dataset.file_pattern = '/nonexistent/x*'",
                                   "make_dataset.global_batch_size = 4"])
    try:
        with pytest.raises(RuntimeError, match=r"Required bindings for `make_dataset` not "
                                               r"provided in config: \['tokenizer_path'\]"):
            make_dataset(None)
        with pytest.raises(ValueError, match=r"make_dataset.seq_len=1 \(given\) must be"):
            make_dataset(None, tokenizer_path="x.model", seq_len=1)
    finally:
        gin.clear_config()
    with pytest.raises(ValueError, match=r"make_dataset.image_size=0 \(given\) must be"):
        pipeline.make_dataset(None, DataConfig(image_size=0, tokenizer_path="x.model"),
                              file_pattern="/nonexistent/x*", global_batch_size=4)
