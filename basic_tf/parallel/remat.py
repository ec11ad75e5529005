"""Recompute (gradient checkpointing) policy for tower blocks.

A block wrapped with `tf.recompute_grad` keeps only its inputs in the forward pass and recomputes
its activations during back-propagation: activation memory per block falls to its input size at
the cost of one more forward. Randomness inside a wrapped block must be stateless (seeded), so
that the recomputed forward equals the original one; every random layer in basic_tf is.
"""
import dataclasses
from typing import Callable

import gin
import tensorflow as tf

MODES = ("none", "every_block", "every_k")


@dataclasses.dataclass(frozen=True)
class RematPolicy:
    """Which blocks to recompute: none, every block, or every k-th block (0, k, 2k, ...)."""
    mode: str = "none"
    k: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"remat_policy.mode={self.mode!r} is not one of {MODES}")
        if self.k < 1:
            raise ValueError(f"remat_policy.k={self.k} must be >= 1")

    def applies_to(self, block_index: int) -> bool:
        if self.mode == "none":
            return False
        if self.mode == "every_block":
            return True
        return block_index % self.k == 0

    def wrap(self, fn: Callable, block_index: int) -> Callable:
        """Returns `fn` or its recompute-wrapped version. `fn` must take positional tensors only
        (tf.recompute_grad rejects keyword arguments in graph mode)."""
        return tf.recompute_grad(fn) if self.applies_to(block_index) else fn


@gin.configurable
def remat_policy(mode: str = "none", k: int = 1) -> RematPolicy:
    """The experiment's remat policy (gin: `remat_policy.mode = 'every_block'`)."""
    return RematPolicy(mode=mode, k=k)
