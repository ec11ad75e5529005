"""Class names against the records' label names (basic_tf.zeroshot.labels)."""
import pytest
import tensorflow as tf

from basic_tf.data import schema
from basic_tf.zeroshot import labels

RECORDS = {0: "ankle boot", 1: "bag", 2: "trouser"}


def _shard(path, pairs):
    png = tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8)).numpy()
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, (label, name) in enumerate(pairs):
            w.write(schema.encode_record(schema.Record(png, ["x"], f"id{i}", label, name)))
    return str(path)


def test_record_label_names(tmp_path):
    path = _shard(tmp_path / "a.tfrecord", [(2, "trouser"), (0, "ankle boot"), (2, "trouser"),
                                            (None, None), (1, "bag")])
    assert labels.record_label_names(path) == RECORDS
    bad = _shard(tmp_path / "b.tfrecord", [(0, "cat"), (0, "dog")])
    with pytest.raises(ValueError, match="label 0 is named both"):
        labels.record_label_names(bad)


def test_first_mismatch_is_named():
    labels.check_class_names(["Ankle_Boot", "bag", "Trouser"], RECORDS, "x-*")  # normalised
    with pytest.raises(ValueError, match=r"--class_names: class 1 is 'trouser' but the records "
                                         r"x-\* name label 1 'bag'"):
        labels.check_class_names(["ankle boot", "trouser", "bag"], RECORDS, "x-*")
    with pytest.raises(ValueError, match="there are only 2 class names but the records x name "
                                         "label 2 'trouser'"):
        labels.check_class_names(["ankle boot", "bag"], RECORDS, "x")
    labels.check_class_names(["a", "b"], {}, "x")  # no label names: nothing to check


def test_by_name():
    natural = ["trouser", "bag", "ankle boot", "shirt"]
    assert labels.label_map_by_name(natural, RECORDS, "x") == [2, 1, 0]
    assert labels.order_by_records(natural, RECORDS, "x") == [
        "ankle boot", "bag", "trouser", "shirt"]
    with pytest.raises(ValueError, match="label 1 'bag', which is not among the 2 class names"):
        labels.label_map_by_name(["trouser", "ankle boot"], RECORDS, "x")


def test_what_the_tools_call(tmp_path):
    path = _shard(tmp_path / "a.tfrecord", [(0, "ankle boot"), (1, "bag"), (2, "trouser")])
    natural = ["trouser", "bag", "ankle boot"]
    assert labels.label_map_for(sorted(natural), path) is None
    assert labels.label_map_for(natural, path, by_name=True) == [2, 1, 0]
    with pytest.raises(ValueError, match="class 0 is 'trouser'"):
        labels.label_map_for(natural, path)
    assert labels.names_for_export(natural, path, by_name=True) == sorted(natural)
    assert labels.names_for_export(natural, None) == natural               # nothing to check
    assert labels.names_for_export(natural, str(tmp_path / "gone-*")) == natural  # not here
    with pytest.raises(ValueError, match="class 0 is 'trouser'"):
        labels.names_for_export(natural, path)
