"""basic_tf.new_experiment: the choices behind a generated gin file (the whole path, README
commands included, runs in tests/tools/test_own_data_readme.py)."""
import os

import gin
import pytest

from basic_tf import config, new_experiment as ne


def test_templates_are_read_off_captions_with_their_class_names():
    captions = {"red": ["a red square.", "a red square.", "something red.", "red red"],
                "blue": ["a blue square.", "the colour blue.", "something blue."]}
    templates = ne.templates_from_captions(captions)
    # seen with both classes, most frequent first; one-class patterns and repeats left out
    assert templates == ["a {c} square.", "something {c}."]
    assert ne.templates_from_captions({"cat": ["a photo"], "dog": ["x"]}) == list(
        ne.FALLBACK_TEMPLATES)


def test_sequence_length_holds_every_prompt_and_99_percent_of_captions():
    assert ne.choose_seq_len([5] * 199 + [40], [7]) == 8     # the 0.5% outlier is cut
    assert ne.choose_seq_len([5] * 10, [17]) == 24           # a prompt is never cut
    assert ne.choose_seq_len([300] * 10, [3]) == 64          # at most 64


def test_batch_gives_at_least_4_steps_per_epoch():
    assert ne.choose_batch(200) == 32
    assert ne.choose_batch(10) == 2
    assert ne.choose_batch(1_000_000) == 256
    assert ne.choose_batch(1_000_000, maximum=100) == 64


def test_schedule_ends_on_a_checkpoint():
    for records, batch, epochs, steps in ((200, 32, 10, None), (200, 32, 10, 40),
                                          (60_000, 128, 3, None), (5, 2, 1, 7)):
        train_steps, per_loop, interval = ne.choose_schedule(records, batch, epochs, steps)
        assert train_steps % interval == 0 and interval % per_loop == 0
        assert train_steps >= (steps or 100)
        assert train_steps // per_loop <= 20     # progress lines stay few


def test_model_gin_parses_and_the_planner_sizes_it():
    config.register_configurables()
    gin.clear_config()
    gin.parse_config(ne.model_gin("small", 32, 24, 47))
    gin.clear_config()
    best, reason = ne.plan("small", 32, 24, 47, 32, device_memory_gb=1.0)
    assert best.num_micro_batches == 1 and "fits" in reason
    tight, _ = ne.plan("medium", 224, 64, 1000, 256, device_memory_gb=1.0)
    assert tight.num_micro_batches > 1 or tight.remat_every > 0   # made to fit 1 GiB


@pytest.mark.parametrize("names, message", [
    (["red", "line\nbreak"], r"class name 1 'line\\nbreak' holds a control character"),
    (["red", "green", "red"], r"class 2 and class 0 are both named 'red'"),
])
def test_class_names_that_do_not_round_trip_are_refused(tmp_path, names, message):
    """Injected fault (issue 24 item 6): shards whose label names hold a newline or repeat (as
    written before the writer refused them). The old code wrote class_names.txt with 5 lines
    for 4 classes, or with a duplicate that only export refused."""
    import numpy as np
    import tensorflow as tf

    from basic_tf.data import schema

    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for label, name in enumerate(names):
            image = tf.io.encode_png(np.full((8, 8, 3), 40 * label, np.uint8)).numpy()
            w.write(schema.encode_record(schema.Record(image, [f"a {name}"], f"x/{label}", label,
                                                       name)))
    with pytest.raises(ValueError, match=rf"--train={tmp_path}/train-\*: {message}"):
        ne.choose(str(tmp_path / "train-*"), None, str(tmp_path / "exp"), log=lambda _: None)
    assert not os.path.exists(tmp_path / "exp" / "class_names.txt")


def test_a_missing_tar_is_named_with_its_flag_before_anything_is_written(tmp_path):
    (tmp_path / "shards").mkdir()
    for name in ("00000.tar", "00001.tar"):  # never read: the list fails first
        (tmp_path / "shards" / name).write_bytes(b"")
    (tmp_path / "data").mkdir()
    kept = tmp_path / "data" / "eval-00000-of-00001.tfrecord"
    kept.write_bytes(b"earlier run")
    missing = str(tmp_path / "shards" / "00002.tar")
    with pytest.raises(FileNotFoundError, match=f"^--eval: tar '{missing}'"):
        ne.shards_from_source(str(tmp_path / "shards/{00000..00002}.tar"),
                              str(tmp_path / "data" / "eval"), flag="--eval")
    assert kept.exists()
