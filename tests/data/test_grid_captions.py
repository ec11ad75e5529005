"""Composed Fashion-MNIST grids (basic_tf/data/grid_captions.py): split discipline and
caption/content agreement, checked on records written and read back through the writer."""
import hashlib

import numpy as np
import pytest

from basic_tf.data import fashion_mnist, grid_captions

pytestmark = pytest.mark.skipif(not fashion_mnist.available(),
                                reason="Debian package dataset-fashion-mnist not installed")
NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle boot")


def _digests(images):
    return {hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images}


def _cells(grids):
    """[N, 56, 56] -> [N, 4, 28, 28] in the order top left, top right, bottom left, bottom right."""
    c = grid_captions.CELL
    return np.stack([grids[:, :c, :c], grids[:, :c, c:], grids[:, c:, :c], grids[:, c:, c:]], 1)


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    d = tmp_path_factory.mktemp("grids")
    return {split: grid_captions.make_grid_split(str(d / split), split, 24, seed=3,
                                                 class_names=NAMES)
            for split in ("train", "test")}


def test_every_cell_is_an_image_of_its_own_split_only(grids):
    train_images, _ = fashion_mnist.load("train")
    test_images, _ = fashion_mnist.load("test")
    train_digests, test_digests = _digests(train_images), _digests(test_images)
    for split, own, other in (("train", train_digests, test_digests),
                              ("test", test_digests, train_digests)):
        cells = _cells(grids[split]["images"]).reshape(-1, 28, 28)
        found = _digests(cells)
        assert grids[split]["images"].shape == (24, 56, 56)
        assert found <= own, f"a {split} grid holds an image that is not a {split} image"
        # Fashion-MNIST has a few pixel-identical images across splits; none of them may be used.
        assert not found & (other - own), f"a {split} grid holds a {split!r}-foreign image"


def test_cells_are_the_source_images_named_in_the_id(grids):
    for split in ("train", "test"):
        images, _ = fashion_mnist.load(split)
        g = grids[split]
        np.testing.assert_array_equal(_cells(g["images"]), images[g["sources"]])


def test_captions_name_the_cells_classes_in_position(grids):
    for split in ("train", "test"):
        _, labels = fashion_mnist.load(split)
        g = grids[split]
        for caps, src, content in zip(g["captions"], g["sources"], g["content"]):
            names = [NAMES[labels[s]] for s in src]       # from the source images, not the grid
            assert list(caps) == [p.format(*names) for p in grid_captions.PHRASINGS]
            assert caps[0] == (f"top left a {names[0]}, top right a {names[1]}, bottom left a "
                               f"{names[2]}, bottom right a {names[3]}.")
            assert content == int("".join(str(labels[s]) for s in src))


def test_held_out_prompts_are_not_training_captions():
    prompts = [t.replace("{c}", "bag") for t in grid_captions.uniform_templates()]
    training = grid_captions.captions_for([8, 8, 8, 8], NAMES)
    assert len(prompts) == 2 and not set(prompts) & set(training)
    assert all(p.count("bag") == 4 for p in prompts)


def test_tile_shows_the_garment_in_every_cell():
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(_cells(grid_captions.tile(x)), np.stack([x] * 4, 1))
