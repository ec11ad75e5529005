"""Helpers shared by the data room's tests: tiny images and records."""
import io

import numpy as np
from PIL import Image

from basic_tf.data import schema

COLOURS = ("red", "green", "blue", "yellow")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))


def random_image(seed: int, height: int = 20, width: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_records(n: int, fmt: str = "jpeg", size=(20, 24)) -> list:
    """n records: random images, 2 captions each ('<colour> thing number i ...'), label i % 4."""
    out = []
    for i in range(n):
        image = random_image(i, *size)
        label = i % len(COLOURS)
        out.append(schema.Record(
            image=jpeg_bytes(image) if fmt == "jpeg" else png_bytes(image),
            captions=[f"a {COLOURS[label]} thing number {i}", f"picture {i} of {COLOURS[label]}"],
            example_id=f"ex/{i:04d}", label=label, label_name=COLOURS[label]))
    return out
