"""basic_tf.data.profile: counts, image sizes and modes, class names in label order, captions."""
import io

import pytest
from PIL import Image

from basic_tf.data import profile, schema, writer


def _png(height, width, mode):
    buf = io.BytesIO()
    Image.new(mode, (width, height), color=0).save(buf, "PNG")
    return buf.getvalue()


def _write(tmp_path, records):
    prefix = str(tmp_path / "data" / "train")
    writer.write_tfrecords(records, prefix, check_images=False)
    return prefix + "-*.tfrecord"


def test_profile_counts_sizes_modes_classes_and_captions(tmp_path):
    records = [
        schema.Record(_png(20, 30, "L"), ["a grey cat.", "cat"], "0", label=1, label_name="cat"),
        schema.Record(_png(40, 40, "RGB"), ["a dog."], "1", label=0, label_name="dog"),
        schema.Record(_png(10, 50, "RGBA"), ["another dog."], "2", label=0, label_name="dog"),
    ]
    p = profile.profile_shards(_write(tmp_path, records))
    assert p.records == 3 and p.labelled == 3
    assert (p.heights, p.widths) == ([20, 40, 10], [30, 40, 50])
    assert p.modes == {"L": 1, "RGB": 1, "RGBA": 1}
    assert p.channels == {1: 1, 3: 1, 4: 1}
    assert p.shorter_side() == 20                      # median of 20, 40, 10
    assert p.ordered_class_names() == ["dog", "cat"]   # label order, not file order
    assert sorted(p.captions) == sorted(["a grey cat.", "cat", "a dog.", "another dog."])
    assert p.class_captions == {"cat": ["a grey cat.", "cat"], "dog": ["a dog.", "another dog."]}
    assert "3 records" in p.describe() and "2 classes" in p.describe()


def test_a_label_without_records_is_named(tmp_path):
    records = [schema.Record(_png(8, 8, "RGB"), [name], str(i), label=label, label_name=name)
               for i, (label, name) in enumerate([(0, "a"), (2, "c")])]
    with pytest.raises(ValueError, match="label 1 has no record"):
        profile.profile_shards(_write(tmp_path, records)).ordered_class_names()


def test_unlabelled_pairs_have_no_class_names(tmp_path):
    records = [schema.Record(_png(8, 8, "RGB"), [f"caption {i}"], str(i)) for i in range(3)]
    p = profile.profile_shards(_write(tmp_path, records))
    assert p.ordered_class_names() == [] and p.labelled == 0
    assert "no labels" in p.describe()
    assert len(p.captions) == 3
