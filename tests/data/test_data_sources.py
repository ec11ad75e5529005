"""Round trips: every source kind -> write_tfrecords -> read back: same images and captions."""
import csv
import json
import os

import numpy as np
import pytest

from basic_tf.data import fashion_mnist, sources, validate, writer
from data_helpers import decode, jpeg_bytes, png_bytes, random_image


def _write_and_read(records, tmp_path, **kwargs):
    summary = writer.write_tfrecords(records, str(tmp_path / "out" / "train"),
                                     show_progress=False, **kwargs)
    read = [r for shard in summary.shards for r in validate.read_records(shard)]
    return summary, read


def test_table_csv_and_jsonl_round_trip(tmp_path):
    images = [random_image(i) for i in range(6)]
    (tmp_path / "img").mkdir()
    rows = []
    for i, im in enumerate(images):
        name = f"img/{i}.png" if i % 2 else f"img/{i}.jpg"
        (tmp_path / name).write_bytes(png_bytes(im) if i % 2 else jpeg_bytes(im))
        rows.append({"path": name, "text": f"caption {i}", "alt": f"alt text {i}", "y": i % 3})
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "text", "alt", "y"])
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"path": r["path"], "text": [r["text"], r["alt"]]}) + "\n")

    for table, kwargs in (("pairs.csv", {"caption_column": "text,alt", "label_column": "y",
                                         "class_names": ["a", "b", "c"]}),
                          ("pairs.jsonl", {"caption_column": "text"})):
        records = sources.from_table(str(tmp_path / table), image_column="path", **kwargs)
        summary, read = _write_and_read(records, tmp_path / ("w_" + table))
        assert summary.written == 6 and len(read) == 6
        for i, rec in enumerate(read):
            assert rec.image == (tmp_path / rows[i]["path"]).read_bytes()  # bytes kept as-is
            assert rec.captions == [f"caption {i}", f"alt text {i}"]
            assert rec.example_id == rows[i]["path"]
            if table.endswith(".csv"):
                assert (rec.label, rec.label_name) == (i % 3, "abc"[i % 3])
            else:
                assert rec.label is None


def test_table_errors_name_row_and_column(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"image": "x.png", "caption": "c"}\n{"image": "y.png"}\n')
    with pytest.raises(FileNotFoundError, match=r"t.jsonl row 1: cannot read image"):
        list(sources.from_table(str(tmp_path / "t.jsonl"), strict=True))
    (tmp_path / "x.png").write_bytes(png_bytes(random_image(0)))
    with pytest.raises(ValueError, match=r"t.jsonl row 2: no column 'caption'"):
        list(sources.from_table(str(tmp_path / "t.jsonl")))


def test_folder_round_trip_with_templates(tmp_path):
    expected = {}
    for c, cls in enumerate(["dog_house", "cat"]):
        for i in range(3):
            path = tmp_path / "root" / cls / ("sub" if i == 2 else "") / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            im = random_image(10 * c + i)
            path.write_bytes(png_bytes(im))
            expected[os.path.relpath(path, tmp_path / "root")] = (cls, im)
    templates = ("a photo of a {}.", "{}")
    summary, read = _write_and_read(sources.from_folder(str(tmp_path / "root"), templates),
                                    tmp_path)
    assert summary.written == 6
    assert sorted(r.example_id for r in read) == sorted(expected)
    for rec in read:
        cls, im = expected[rec.example_id]
        name = cls.replace("_", " ")
        assert rec.captions == [f"a photo of a {name}.", name]
        assert rec.label == ["cat", "dog_house"].index(cls) and rec.label_name == name
        np.testing.assert_array_equal(decode(rec.image), im)
    # Labels follow the sorted folder names; the writer lists the names in label order.
    names = json.loads((tmp_path / "out" / "train.class_names.json").read_text())
    assert names == ["cat", "dog house"]


def test_arrays_round_trip_png_exact_and_jpeg_close(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (5, 12, 12), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0])
    names = ["zero", "one", "two"]
    _, read = _write_and_read(sources.from_arrays(gray, labels, names, name="g"), tmp_path / "p")
    assert [r.example_id for r in read] == [f"g/{i:08d}" for i in range(5)]
    for i, rec in enumerate(read):
        assert rec.image_format == "png"
        np.testing.assert_array_equal(decode(rec.image), np.repeat(gray[i][..., None], 3, -1))
        assert rec.captions[0] == f"a photo of a {names[labels[i]]}."
        assert len(rec.captions) == len(sources.DEFAULT_CAPTION_TEMPLATES)
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (2, 16, 1))[..., None]
    smooth = np.repeat(smooth, 3, -1)
    _, read = _write_and_read(
        sources.from_arrays(smooth, captions=[["x"], ["y"]], image_format="jpeg",
                            jpeg_quality=95), tmp_path / "j")
    assert [r.captions for r in read] == [["x"], ["y"]]
    assert read[0].image_format == "jpeg"
    assert np.abs(decode(read[0].image).astype(int) - smooth[0]).mean() < 3.0


@pytest.mark.skipif(not fashion_mnist.available(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_load_and_round_trip(tmp_path):
    x, y = fashion_mnist.load("test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10  # the test split is balanced
    assert fashion_mnist.CLASS_NAMES[9] == "Ankle boot"
    _, read = _write_and_read(
        sources.from_arrays(x[:20], y[:20], fashion_mnist.CLASS_NAMES, name="fm"), tmp_path)
    for i, rec in enumerate(read):
        np.testing.assert_array_equal(decode(rec.image)[..., 1], x[i])
        assert rec.label == y[i] and rec.label_name == fashion_mnist.CLASS_NAMES[y[i]]


def test_fashion_mnist_missing_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist.load("train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        fashion_mnist.load("validation")


def test_tfds_round_trip_from_a_locally_prepared_dataset(tmp_path):
    import tensorflow_datasets as tfds

    images = [random_image(i, 8, 8) for i in range(4)]

    class TinyCaptionsForBasicTf(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
                "label": tfds.features.ClassLabel(names=["red", "blue"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, im in enumerate(images):
                yield i, {"image": im, "captions": {"text": [f"cap {i} a", f"cap {i} b"]},
                          "label": i % 2}

    TinyCaptionsForBasicTf(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    name = "tiny_captions_for_basic_tf"
    _, read = _write_and_read(sources.from_tfds(name, "train", str(tmp_path / "tfds"),
                                                caption_key="captions/text"), tmp_path / "c")
    assert len(read) == 4
    for rec in read:
        i = int(rec.captions[0].split()[1])
        assert rec.captions == [f"cap {i} a", f"cap {i} b"]
        np.testing.assert_array_equal(decode(rec.image), images[i])
        assert rec.label == i % 2 and rec.label_name == ["red", "blue"][i % 2]
        assert rec.example_id.startswith(f"{name}/train/")
    _, read = _write_and_read(sources.from_tfds(name, "train", str(tmp_path / "tfds"),
                                                templates=("a {} square",)), tmp_path / "l")
    assert sorted(r.captions[0] for r in read) == ["a blue square"] * 2 + ["a red square"] * 2
    with pytest.raises(FileNotFoundError, match="never downloads"):
        list(sources.from_tfds(name, "train", str(tmp_path / "empty")))


def test_templates_are_checked():
    """'{c}' is the placeholder (as in prompt templates); the old '{}' is read as '{c}'."""
    assert len(sources.caption_templates()) == 10
    assert all("{c}" in t for t in sources.caption_templates())
    assert sources.caption_templates(["a {c} on {c}", "a {}."]) == ("a {c} on {c}", "a {c}.")
    assert sources.class_captions("{c} $1", ["a {c}."]) == ["a {c} $1."]  # name verbatim
    with pytest.raises(ValueError, match=r"caption_templates.templates\[1\]='a photo' has no "
                                         r"'\{c\}' placeholder"):
        sources.caption_templates(["a {c}", "a photo"])


def test_gin_binds_the_templates_at_the_top():
    """caption_templates.templates is read by the top (basic_tf/from_gin_data.py), whose result
    the sources take as `templates`; unbound, they get the built-in 10."""
    import gin

    from basic_tf import from_gin_data

    with gin.unlock_config():
        gin.bind_parameter("caption_templates.templates", ["{} (gin)"])
    try:
        templates = from_gin_data.caption_templates()
    finally:
        gin.clear_config()
    assert templates == ("{c} (gin)",)
    rec = next(sources.from_arrays(np.zeros([1, 4, 4], np.uint8), [0], ["cat"],
                                   templates=templates))
    assert rec.captions == ["cat (gin)"]
    rec = next(sources.from_arrays(np.zeros([1, 4, 4], np.uint8), [0], ["cat"]))
    assert rec.captions == [t.replace("{c}", "cat") for t in sources.DEFAULT_CAPTION_TEMPLATES]
