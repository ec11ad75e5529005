"""TFDS and retrieval inputs: a tiny locally built TFDS set, TFRecords, missing-data messages."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from basic_tf.data import augment, schema
from basic_tf.zeroshot import evaluate_classification, inputs

from zeroshot_helpers import SEQ_LEN, bucket_encoder, bucket_image, hash_tokenizer

# labels and the bucket each image is drawn from: rows 8-10 are deliberate mistakes.
LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3]
BUCKETS = [0, 1, 2, 3, 0, 1, 2, 3, 3, 3, 0]


class ZsTinyLabeled(tfds.core.GeneratorBasedBuilder):
    """11 constant-colour 10x10 PNGs in 4 classes, built locally (no download)."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(10, 10, 3)),
            "label": tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, (label, bucket) in enumerate(zip(LABELS, BUCKETS)):
            yield i, {"image": bucket_image(bucket, 4, 10), "label": label}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    ZsTinyLabeled(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_exact_counts(tfds_dir):
    """Hand count: 8 rows right; top-2 adds row 8 (label 0, predicted 3, ties -> [3, 0])."""
    ds = inputs.tfds_classification_dataset("zs_tiny_labeled", data_dir=tfds_dir, image_size=6,
                                            global_batch_size=4)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 3 and [b["mask"].sum() for b in batches] == [4, 4, 3]
    assert batches[0]["images"].shape == (4, 6, 6, 3)
    result = evaluate_classification(bucket_encoder(4), np.eye(4, dtype=np.float32), ds, k=2)
    assert (result["count"], result["top1_correct"], result["top2_correct"]) == (11, 8, 9)
    assert result["confusion"][1][3] == 1 and result["confusion"][3][0] == 1


def test_tfds_missing_data_names_the_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
        inputs.tfds_builder("cifar10", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="(?s)MANUAL download.*ILSVRC2012_img_val.tar"):
        inputs.tfds_builder("imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not a TFDS dataset"):
        inputs.tfds_builder("no_such_dataset_zs", data_dir=str(tmp_path))


def test_subset_label_remap():
    table = inputs._label_remap("imagenet_a", 1000).numpy()
    indices = [i for i in range(1000) if table[i] >= 0]
    assert len(indices) == 200 and list(table[indices]) == list(range(200))
    assert inputs._label_remap("imagenet1k", 1000) is None
    with pytest.raises(ValueError, match="dataset has 10 labels"):
        inputs._label_remap("imagenet_r", 10)


def test_retrieval_dataset_from_tfrecords(tmp_path):
    """5 records with 1-3 captions (one empty), max 2 captions, batches of 2: exact layout."""
    captions = [["a red car"], ["a cat", "", "a dog"], ["sky", "blue sky", "clouds"], ["boat"],
                ["tench", "fish"]]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=[5, 12, 9, 3], dtype=np.uint8)
    path = str(tmp_path / "ret.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i, caps in enumerate(captions):
            png = tf.io.encode_png(images[i]).numpy()
            w.write(schema.encode_record(schema.Record(png, caps, f"ret/{i}")))
    ds = inputs.retrieval_dataset(hash_tokenizer, file_pattern=path, image_size=8,
                                  global_batch_size=2, max_captions=2)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 3
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert got["token_ids"].shape == (6, 2, SEQ_LEN)
    np.testing.assert_array_equal(got["mask"], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(got["caption_mask"], [[1, 0], [1, 1], [1, 1], [1, 0], [1, 1],
                                                        [0, 0]])
    kept = [[c for c in caps if c][:2] for caps in captions]
    for i, caps in enumerate(kept):
        np.testing.assert_array_equal(got["token_ids"][i, :len(caps)],
                                      hash_tokenizer(tf.constant(caps)).numpy())
        assert not got["token_ids"][i, len(caps):].any()
        want = augment.decode_and_center_crop(tf.io.encode_png(images[i]), 8).numpy()
        np.testing.assert_allclose(got["images"][i], want)
