"""Recompute (gradient checkpointing) policy for tower blocks.

A block wrapped with `tf.recompute_grad` keeps only its inputs in the forward pass and recomputes
its activations during back-propagation: activation memory per block falls to its input size at
the cost of one more forward. Randomness inside a wrapped block must be stateless (seeded), so
that the recomputed forward equals the original one; every random layer in basic_tf is.

An experiment names its policy with one string (gin `train.remat`, see RematPolicy.parse):
'none', 'every_block', or 'every_k:K' (blocks 0, K, 2K, ... recomputed).
"""
import dataclasses
from typing import Callable

import tensorflow as tf

MODES = ("none", "every_block", "every_k")


@dataclasses.dataclass(frozen=True)
class RematPolicy:
    """Which blocks to recompute: none, every block, or every k-th block (0, k, 2k, ...)."""
    mode: str = "none"
    k: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"RematPolicy.mode={self.mode!r} is not one of {MODES}")
        if self.k < 1:
            raise ValueError(f"RematPolicy.k={self.k} must be >= 1")

    @classmethod
    def parse(cls, text: str, name: str = "remat") -> "RematPolicy":
        """'none' | 'every_block' | 'every_k:K' -> RematPolicy; ValueError naming `name` and the
        value otherwise."""
        mode, _, k = str(text).partition(":")
        try:
            if mode == "every_k" and k.isdigit() and int(k) >= 1:
                return cls("every_k", int(k))
            if mode in ("none", "every_block") and not k:
                return cls(mode)
        except ValueError:
            pass
        raise ValueError(f"{name}={text!r} is not a remat policy: use 'none', 'every_block' or "
                         f"'every_k:K' (K >= 1, every K-th block)")

    def __str__(self) -> str:
        """The string parse() reads back."""
        return f"every_k:{self.k}" if self.mode == "every_k" else self.mode

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
