"""make_dataset: batch contract, evaluation padding, per-host sharding, determinism, augmentation."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from basic_tf.data import augment, pipeline, tokenizer, writer
from basic_tf.data.data_config import DataConfig
from data_helpers import decode, jpeg_bytes, make_records, png_bytes, random_image


def build(pattern, sp_model, training=True, context=None, **kwargs):
    data = DataConfig(image_size=16, seq_len=10, tokenizer_path=sp_model)
    args = dict(file_pattern=pattern, global_batch_size=8, shuffle_buffer=32, cycle_length=2,
                log_skipped=False)
    args.update(kwargs)
    return pipeline.make_dataset(context, data, training=training, **args)


def test_training_batches_follow_the_contract(shards_120, sp_model):
    pattern, records = shards_120
    by_id = {r.example_id: r for r in records}
    tok = tokenizer.Tokenizer(sp_model, 10)
    caption_ids = {r.example_id: tok(r.captions).numpy() for r in records}
    ds = build(pattern, sp_model)
    spec = ds.element_spec
    assert spec["images"].shape == (8, 16, 16, 3) and spec["images"].dtype == tf.float32
    assert spec["token_ids"].shape == (8, 10) and spec["token_ids"].dtype == tf.int32
    assert spec["labels"].shape == (8,) and spec["labels"].dtype == tf.int32
    assert spec["mask"].shape == (8,) and spec["skipped"].shape == (8,)
    seen = set()
    for batch in ds.take(30):  # 240 examples: two epochs of 120 (shuffling mixes the boundary)
        ids = [i.decode() for i in batch["example_id"].numpy()]
        seen.update(ids)
        images = batch["images"].numpy()
        assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.05
        np.testing.assert_array_equal(batch["labels"].numpy(), [by_id[i].label for i in ids])
        assert batch["mask"].numpy().tolist() == [1.0] * 8
        assert batch["skipped"].numpy().sum() == 0
        for i, row in zip(ids, batch["token_ids"].numpy()):  # one of the record's captions
            assert any((row == o).all() for o in caption_ids[i])
    assert len(seen) == 120


def test_same_seed_same_batches_other_seed_other_batches(shards_120, sp_model):
    pattern, _ = shards_120
    first = [b for b in build(pattern, sp_model, seed=3).take(3).as_numpy_iterator()]
    again = [b for b in build(pattern, sp_model, seed=3).take(3).as_numpy_iterator()]
    other = [b for b in build(pattern, sp_model, seed=4).take(3).as_numpy_iterator()]
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any((a["example_id"] != b["example_id"]).any() or
               not np.allclose(a["images"], b["images"]) for a, b in zip(first, other))


def test_evaluation_is_one_padded_pass_with_centre_crops(tmp_path, sp_model):
    records = make_records(21, fmt="png", size=(16, 20))
    writer.write_tfrecords(records, str(tmp_path / "ev"), max_shard_bytes=4000,
                           show_progress=False)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=4)
    tok = tokenizer.Tokenizer(sp_model, 10)
    batches = list(build(str(tmp_path / "ev-*"), sp_model, training=False, context=ctx,
                         global_batch_size=16).as_numpy_iterator())
    # per-replica batch 4; 21 records -> 6 batches, padded to 8 = two steps of 4 replicas
    assert len(batches) == 8 and all(b["images"].shape == (4, 16, 16, 3) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.tolist() == [1.0] * 21 + [0.0] * 11
    ids = np.concatenate([b["example_id"] for b in batches])[:21]
    assert sorted(ids.tolist()) == sorted(r.example_id.encode() for r in records)
    by_id = {r.example_id.encode(): r for r in records}
    images = np.concatenate([b["images"] for b in batches])
    tokens = np.concatenate([b["token_ids"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    for k, i in enumerate(ids):
        # reference: Pillow decode, central 16x16 square of the 16x20 image (no resize needed)
        expected = decode(by_id[i].image)[:, 2:18] / 255.0
        np.testing.assert_allclose(images[k], expected, atol=1e-6)
        np.testing.assert_array_equal(tokens[k], tok([by_id[i].captions[0]]).numpy()[0])
        assert labels[k] == by_id[i].label
    assert (images[21:] == 0).all() and (labels[21:] == -1).all()


def test_files_are_split_between_input_pipelines(shards_120, sp_model, tmp_path):
    pattern, _ = shards_120
    files = pipeline.shard_for_pipeline
    all_files = pipeline.schema.list_shards(pattern)
    parts = [files(all_files, tf.distribute.InputContext(2, i, 2)) for i in range(2)]
    assert parts == [all_files[0::2], all_files[1::2]]
    ids = [set(np.concatenate([b["example_id"] for b in build(
        pattern, sp_model, training=False, context=tf.distribute.InputContext(2, i, 2),
        global_batch_size=8).as_numpy_iterator()]).tolist()) for i in range(2)]
    assert not ids[0] & ids[1] and len((ids[0] | ids[1]) - {b""}) == 120
    with pytest.raises(ValueError, match=r"4 shard files for 8 input pipelines"):
        build(pattern, sp_model, context=tf.distribute.InputContext(8, 0, 8))
    with pytest.raises(FileNotFoundError, match="matches no TFRecord shard"):
        build(str(tmp_path / "nothing-*"), sp_model)


def test_random_crop_matches_unfused_reference():
    """Fused JPEG window decode == full decode + the same stateless box + slice (PNG: exact)."""
    image = random_image(5, 40, 56)
    for encoded, max_edge_diff in ((png_bytes(image), 1e-6), (jpeg_bytes(image, 95), 0.2)):
        for s in range(4):
            seed = tf.constant([7, s], tf.int64)
            got = augment.decode_and_random_crop(tf.constant(encoded), seed, 24,
                                                 area_range=(0.3, 0.6), random_flip=False)
            crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            full = tf.io.decode_image(encoded, channels=3)
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(full), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), crop_seed,
                min_object_covered=0.0, aspect_ratio_range=[3 / 4, 4 / 3],
                area_range=[0.3, 0.6], max_attempts=10, use_image_if_no_bounding_boxes=True)
            area = float(size[0] * size[1]) / (40 * 56)
            assert 0.3 - 0.02 <= area <= 0.6 + 0.02
            want = tf.image.resize(tf.slice(full, begin, size), [24, 24]) / 255.0
            diff = np.abs(got.numpy() - want.numpy())
            # JPEG: chroma upsampling differs at the window's right edge only: last column
            assert diff[:, :-1].max() <= 1e-6 and diff.max() <= max_edge_diff


def test_whole_area_view_at_the_image_size_gives_the_decoded_pixels(tmp_path, sp_model):
    """area_range (1, 1) (the demo's): no window is drawn, and a square image already at
    image_size goes through the resize unchanged: the batch holds the PNG's own pixels / 255,
    mirrored where flipped (both flips seen), and a non-square image the whole image resized."""
    records = make_records(24, fmt="png", size=(16, 16)) + [
        dataclasses.replace(r, example_id=f"wide/{i}")
        for i, r in enumerate(make_records(8, size=(20, 24)))]
    writer.write_tfrecords(records, str(tmp_path / "part"), show_progress=False)
    pixels = {r.example_id: decode(r.image) for r in records[:24]}
    flips = set()
    for batch in build(str(tmp_path / "part*.tfrecord"), sp_model, area_range=(1.0, 1.0),
                       aspect_ratio_range=(1.0, 1.0)).take(8).as_numpy_iterator():
        for example_id, image in zip(batch["example_id"], batch["images"]):
            if example_id.decode() not in pixels:  # a 20x24 JPEG: whole image, resized
                assert image.shape == (16, 16, 3) and image.std() > 0.05
                continue
            want = pixels[example_id.decode()] / np.float32(255.0)
            flipped = not np.array_equal(image, want)
            np.testing.assert_array_equal(image, want[:, ::-1] if flipped else want)
            flips.add(flipped)
    assert flips == {True, False}


def test_corrupt_record_in_the_middle_is_skipped_and_counted(tmp_path, sp_model):
    records = make_records(10)
    bad = records[4]
    bad.image = bad.image[:200] + b"\x00\x11" * 200 + bad.image[-2:]  # broken JPEG body
    writer.write_tfrecords(records, str(tmp_path / "m"), check_images=False,
                           show_progress=False)
    batches = list(build(str(tmp_path / "m-*"), sp_model, training=False,
                         global_batch_size=3).as_numpy_iterator())
    ids = np.concatenate([b["example_id"] for b in batches])
    skipped = np.concatenate([b["skipped"] for b in batches])
    assert ids.tolist()[:9] == [f"ex/{i:04d}".encode() for i in range(10) if i != 4]
    assert skipped.tolist()[:9] == [0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_everything_comes_from_gin(shards_120, sp_model):
    """The top's make_dataset (basic_tf/from_gin_data.py) takes every argument from the bindings."""
    import gin

    from basic_tf import from_gin_data

    pattern, _ = shards_120
    gin.parse_config([
        f"make_dataset.file_pattern = '{pattern}'",
        "make_dataset.global_batch_size = 12",
        "make_dataset.eval_global_batch_size = 40",
        "make_dataset.image_size = 8",
        "make_dataset.seq_len = 5",
        f"make_dataset.tokenizer_path = '{sp_model}'",
        "make_dataset.string_features = False",
    ])
    try:
        train = from_gin_data.make_dataset(None, training=True).element_spec
        evaluation = from_gin_data.make_dataset(None, training=False).element_spec
    finally:
        gin.clear_config()
    assert train["images"].shape == (12, 8, 8, 3) and train["token_ids"].shape == (12, 5)
    assert evaluation["images"].shape == (40, 8, 8, 3) and "example_id" not in evaluation
