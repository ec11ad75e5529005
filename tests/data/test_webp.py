"""WebP wherever an image is read: header size, decode to 3 channels (alpha, grayscale), the
writer, the training pipeline (too large / corrupt skipped and counted) and serving's checks."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import augment, limits, pipeline, schema, skips, writer
from basic_tf.data.data_config import DataConfig
from basic_tf.export import inputs as serving_inputs
from data_helpers import decode, random_image, webp_bytes, webp_claiming, \
    write_shard

CASES = {  # name -> (array, lossless)
    "rgb_lossless": (random_image(1, 20, 37), True),
    "rgb_lossy": (random_image(2, 21, 30), False),
    "alpha_lossless": (np.random.default_rng(3).integers(0, 256, (18, 25, 4), np.uint8), True),
    "alpha_lossy": (np.random.default_rng(4).integers(0, 256, (18, 25, 4), np.uint8), False),
    "gray_lossless": (random_image(5, 17, 23)[..., 0], True),
    "gray_lossy": (random_image(6, 17, 23)[..., 0], False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_webp_header_size_and_decode_to_rgb(name):
    array, lossless = CASES[name]
    data = webp_bytes(array, lossless=lossless)
    height, width = array.shape[:2]
    assert schema.sniff_image_format(data) == "webp"
    assert limits.header_height_width(data) == (height, width)
    assert limits.image_height_width(tf.constant(data)).numpy().tolist() == [height, width]
    rgb = augment.decode_rgb(tf.constant(data)).numpy()
    np.testing.assert_array_equal(rgb, decode(data))  # Pillow's convert("RGB"): alpha dropped


def test_webp_header_claiming_12000x12000_is_read_without_decoding():
    data = webp_claiming(12000, 12000)
    assert limits.header_height_width(data) == (12000, 12000)
    assert limits.image_height_width(tf.constant(data)).numpy().tolist() == [12000, 12000]
    assert limits.image_height_width(tf.constant(b"RIFF")).numpy().tolist() == [-1, -1]


def _webp_record(i, image, caption=None):
    return schema.Record(image, [caption or f"a webp thing number {i}"], f"webp/{i}")


def test_writer_keeps_webp_and_skips_oversized_and_corrupt(tmp_path):
    good = webp_bytes(random_image(7), lossless=False)
    records = [_webp_record(0, good), _webp_record(1, webp_claiming(12000, 12000)),
               _webp_record(2, good[:len(good) // 2]), _webp_record(3, webp_bytes(
                   CASES["alpha_lossy"][0], lossless=False))]
    summary = writer.write_tfrecords(records, str(tmp_path / "w"), show_progress=False)
    assert (summary.written, summary.too_large_images, summary.bad_images) == (2, 1, 1)
    stored = [schema.decode_record(r.numpy()) for r in
              tf.data.TFRecordDataset(summary.shards)]
    assert [r.image_format for r in stored] == ["webp", "webp"]


def test_pipeline_trains_on_webp_and_counts_bad_webp(tmp_path, sp_model):
    good = [_webp_record(i, webp_bytes(CASES[name][0], lossless=CASES[name][1]))
            for i, name in enumerate(sorted(CASES))]
    truncated = webp_bytes(random_image(8, 40, 40), lossless=False)
    bad = [_webp_record(10, webp_claiming(12000, 12000)),
           _webp_record(11, truncated[:len(truncated) // 2]),
           _webp_record(12, truncated[:40] + b"\x00" * 200)]
    path = write_shard(str(tmp_path / "webp.tfrecord"), good + bad)
    ds = pipeline.make_dataset(
        None, DataConfig(image_size=16, seq_len=10, tokenizer_path=sp_model), training=False,
        file_pattern=path, global_batch_size=3, log_skipped=False)
    ids, by_cause = [], np.zeros(skips.NUM_CAUSES, int)
    for batch in ds:
        ids += [i.decode() for i, m in zip(batch["example_id"].numpy(), batch["mask"].numpy())
                if m]
        by_cause += batch["skipped_by_cause"].numpy().sum(0)
        assert batch["images"].shape == (3, 16, 16, 3)
    assert sorted(ids) == sorted(r.example_id for r in good)
    assert by_cause[skips.TOO_LARGE] == 1 and by_cause[skips.BAD_IMAGE] == 2
    assert by_cause.sum() == 3


def test_serving_images_input_takes_webp():
    limits_ = serving_inputs.serving_limits()
    images = tf.constant([webp_bytes(CASES["alpha_lossy"][0], lossless=False),
                          webp_bytes(CASES["gray_lossless"][0])])
    out = serving_inputs.decode_images(images, "test", limits_, 16, 1.0, False)
    assert out.shape == (2, 16, 16, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixels"):
        serving_inputs.decode_images(tf.constant([webp_claiming(12000, 12000)]), "test",
                                     limits_, 16, 1.0, False)
