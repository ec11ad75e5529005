"""The serving interface as one table: each signature's inputs (all tf.string [N]), which of them a
request may leave out, and its outputs with the dtype a client decodes them to.

The exporter builds each signature's input specs and serving.json from it (signatures.py,
exporter.py); the clients check requests and decode answers with it (client.py,
tools/serving_client.py). No TensorFlow here: the clients run without it.
"""
import dataclasses
from typing import Dict, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: Tuple[str, ...]      # argument order of the serving function
    outputs: Dict[str, type]     # output name -> numpy dtype (str: tf.string)
    optional: Tuple[str, ...] = ()   # inputs with a default baked into the export


# Insertion order matters: the first is also served as serving_default.
SIGNATURES = {
    "classify": Signature(("images",),
                          {"classes": str, "scores": np.float32, "class_ids": np.int32}),
    "classify_with_labels": Signature(("images", "class_names", "templates"),
                                      {"scores": np.float32}, optional=("templates",)),
    "embed_image": Signature(("images",), {"embeddings": np.float32}),
    "embed_text": Signature(("texts",), {"embeddings": np.float32}),
}
DEFAULT_SIGNATURE = next(iter(SIGNATURES))
BINARY_INPUTS = frozenset({"images"})   # encoded image files: base64 in REST JSON


def signature(name: str) -> Signature:
    """The table's row for `name`; ValueError naming the known ones otherwise."""
    if name not in SIGNATURES:
        raise ValueError(f"unknown signature {name!r}; the export has {list(SIGNATURES)}")
    return SIGNATURES[name]
