"""Fashion-MNIST grids with nearly unique captions: four real garments in a 2x2 grid (56x56),
captioned by naming each garment in its position.

Why: with single garments and templated captions there are only 10 caption contents, so a batch
of B pairs holds about B/10 same-content captions that the contrastive loss counts as negatives.
A grid's content is the classes of its four cells in order: 10^4 contents, so a batch of 1,024
holds few exact duplicates (about 1024^2 / (2 * 10^4) ~ 52 pairs), and its hardest negatives
differ from the positive in one garment.

Split discipline: training grids are composed from the Fashion-MNIST training images only,
held-out grids from the test images only. Each grid's example id lists its source image indices
(`fashion_mnist_grid/<split>/<n>/<i0>-<i1>-<i2>-<i3>`, cells top left, top right, bottom left,
bottom right), its label is the content id (1000*c0 + 100*c1 + 10*c2 + c3 with the cells'
classes), and its captions are every phrasing of `PHRASINGS` filled with the four class names.
"""
import io
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from basic_tf.data import fashion_mnist, schema, sources, validate, writer

CELL = 28                # Fashion-MNIST's own resolution: garments are never rescaled
GRID_SIZE = 2 * CELL     # 56x56

# Training phrasings; {0} {1} {2} {3} = top left, top right, bottom left, bottom right.
PHRASINGS = (
    "top left a {0}, top right a {1}, bottom left a {2}, bottom right a {3}.",
    "{0} at top left, {1} at top right, {2} at bottom left and {3} at bottom right.",
    "upper row: {0} and {1}; lower row: {2} and {3}.",
    "left column: {0} above {2}; right column: {1} above {3}.",
    "on top a {0} left of a {1}, below a {2} left of a {3}.",
)
# Never used as training captions: the zero-shot prompts are these phrasings with one class
# name in every cell (a single garment is shown tiled in all four cells, `tile`).
HELD_OUT_PHRASINGS = (
    "a grid: {0} top left, {1} top right, {2} bottom left, {3} bottom right.",
    "first row {0} then {1}, second row {2} then {3}.",
)


def content_id(cell_labels: Sequence[int]) -> int:
    """Labels of the four cells (top left, top right, bottom left, bottom right) -> 0..9999."""
    a, b, c, d = (int(x) for x in cell_labels)
    return 1000 * a + 100 * b + 10 * c + d


def captions_for(cell_labels: Sequence[int], class_names: Sequence[str],
                 phrasings: Sequence[str] = PHRASINGS) -> list:
    """Every phrasing filled with the class names of the four cells, in position."""
    names = [class_names[int(x)] for x in cell_labels]
    return [p.format(*names) for p in phrasings]


def uniform_templates(phrasings: Sequence[str] = HELD_OUT_PHRASINGS) -> list:
    """Zero-shot prompt templates ('{c}' = class name): each phrasing with {c} in every cell."""
    return [p.format(*["{c}"] * 4) for p in phrasings]


def tile(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> [N, 56, 56]: the garment in all four cells, at its own scale (how a
    single garment is shown to a model trained on grids)."""
    return np.tile(np.asarray(images), (1, 2, 2))


def compose(images: np.ndarray, num_grids: int, rng: np.random.Generator):
    """Grids from `images` uint8 [N, 28, 28]: (grids uint8 [G, 56, 56], sources int64 [G, 4]).

    Sources are consecutive permutations of all N images cut into fours, so every image is used
    once before any is used twice (num_grids = N / 4 uses each exactly once)."""
    n = len(images)
    rounds = -(-4 * num_grids // n)
    sources_ = np.concatenate([rng.permutation(n) for _ in range(rounds)])[:4 * num_grids]
    sources_ = sources_.reshape(num_grids, 4).astype(np.int64)
    cells = images[sources_]                                   # [G, 4, 28, 28]
    top = np.concatenate([cells[:, 0], cells[:, 1]], axis=2)
    bottom = np.concatenate([cells[:, 2], cells[:, 3]], axis=2)
    return np.concatenate([top, bottom], axis=1), sources_


def grid_records(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 num_grids: int, seed: int, split: str) -> Iterator[schema.Record]:
    """Composes `num_grids` grids from (images, labels) of one split; yields schema.Records
    (PNG image, captions, example id with the source indices, label = content id)."""
    grids, srcs = compose(images, num_grids, np.random.default_rng(seed))
    for i, (grid, src) in enumerate(zip(grids, srcs)):
        cell_labels = labels[src]
        yield schema.Record(image=sources.encode_image(grid, "png"),
                            captions=captions_for(cell_labels, class_names),
                            example_id=f"fashion_mnist_grid/{split}/{i:06d}/"
                                       + "-".join(str(int(s)) for s in src),
                            label=content_id(cell_labels))


def write_grid_tfrecords(output_prefix: str, split: str, num_grids: int, seed: int,
                         class_names: Sequence[str],
                         data_dir: str = fashion_mnist.DEFAULT_DIR) -> writer.WriteSummary:
    """Writes `num_grids` grids of Fashion-MNIST's `split` ('train' or 'test') images through
    the project's TFRecord writer; returns its summary."""
    images, labels = fashion_mnist.load(split, data_dir)
    return writer.write_tfrecords(
        grid_records(images, labels, class_names, num_grids, seed, split), output_prefix,
        total=num_grids, show_progress=False)


def read_grids(output_prefix: str) -> Dict[str, np.ndarray]:
    """The shards written by `write_grid_tfrecords`, back as arrays:
    images uint8 [N, 56, 56] (one channel: the PNGs are gray stored as RGB), captions object
    [N, P] (str), content int64 [N], sources int64 [N, 4], in shard order."""
    from PIL import Image

    images, captions, content, srcs = [], [], [], []
    for path in sorted(tf.io.gfile.glob(output_prefix + "-*.tfrecord")):
        for record in validate.read_records(path):
            images.append(np.asarray(Image.open(io.BytesIO(record.image)))[..., 0])
            captions.append(record.captions)
            content.append(record.label)
            srcs.append([int(s) for s in record.example_id.rsplit("/", 1)[1].split("-")])
    if not images:
        raise FileNotFoundError(f"no grid records under {output_prefix}-*.tfrecord")
    return {"images": np.stack(images), "captions": np.array(captions, dtype=object),
            "content": np.array(content, np.int64), "sources": np.array(srcs, np.int64)}


def make_grid_split(output_prefix: str, split: str, num_grids: int, seed: int,
                    class_names: Sequence[str],
                    data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Writes the split's grids (`write_grid_tfrecords`) and reads them back (`read_grids`)."""
    write_grid_tfrecords(output_prefix, split, num_grids, seed, class_names,
                         data_dir or fashion_mnist.DEFAULT_DIR)
    return read_grids(output_prefix)
