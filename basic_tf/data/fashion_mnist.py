"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (no download at run time).

Images stay grayscale here ([N, 28, 28] uint8); `basic_tf.data.sources.from_arrays` stores them
as 3-channel PNGs when writing TFRecords, so every record of the project decodes to [H, W, 3].
"""
import gzip
import os
from typing import Tuple

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

# From the package README (Zalando Research, MIT licence), in label order 0..9.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {"train": "train", "test": "t10k"}
_SIZES = {"train": 60000, "test": 10000}


def available(data_dir: str = DEFAULT_DIR) -> bool:
    """True when the IDX files of both splits are present."""
    import tensorflow as tf   # at use: importing this module stays light (basic-demo's start)

    return all(tf.io.gfile.exists(os.path.join(data_dir, f"{p}-{k}-idx{n}-ubyte.gz"))
               for p in _FILES.values() for k, n in (("images", 3), ("labels", 1)))


def load(split: str = "train", data_dir: str = DEFAULT_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 28, 28], labels uint8 [N]); N = 60000 (train) or 10000 (test)."""
    if split not in _FILES:
        raise ValueError(f"fashion_mnist.load(split={split!r}): split must be one of "
                         f"{sorted(_FILES)}")
    if not available(data_dir):
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {data_dir!r}. Install the Debian package "
            "(as root): apt-get update && apt-get install -y dataset-fashion-mnist "
            "(or run tools/install.sh)")
    prefix = os.path.join(data_dir, _FILES[split])
    images = _read_idx(prefix + "-images-idx3-ubyte.gz", magic=2051)
    labels = _read_idx(prefix + "-labels-idx1-ubyte.gz", magic=2049)
    if images.shape != (_SIZES[split], 28, 28) or labels.shape != (_SIZES[split],):
        raise ValueError(f"{prefix}-*: unexpected shapes images {images.shape}, labels "
                         f"{labels.shape}; expected ({_SIZES[split]}, 28, 28) and "
                         f"({_SIZES[split]},)")
    return images, labels


def _read_idx(path: str, magic: int) -> np.ndarray:
    """Reads an IDX file: big-endian magic, one int32 per dimension, then uint8 data."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        data = gzip.decompress(f.read())
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic {found}, expected {magic}; the file is corrupt")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
