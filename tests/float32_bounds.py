"""How far apart two float32 results of the same mathematics may be when they were computed
differently: on another placement (DTensor mesh, replicas, worker processes), in another compile
mode (XLA, remat, a SavedModel graph) or on another machine (another CPU's vector width changes
the order of every reduction: AVX2 against AVX-512). The tests compare with these bounds, never
with a constant that happened to hold on one CPU; bit-for-bit equality is asserted only where the
program and the device are the same (a resume replaying steps in one process).

The model (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2):
float32 rounds each operation to a relative error of at most u = EPS32 / 2. A sum of n terms,
in any order, is within (n - 1) u sum|x_i| of the exact sum, so two orders differ by at most

    (n - 1) * EPS32 * sum|x_i|                                     (one reduction)

A loss is a chain of reductions (convolutions and matmuls over their contraction length,
normalisation statistics over their axis, attention over its keys, the softmax's normaliser and
the batch mean); to first order their relative errors add, so one evaluation of the loss may move
by EPS32 * sum(n_k - 1) of its magnitude (`reduction_rtol`). Training repeats it: each update
applies the rounding of that step's gradient to the weights and later losses see it, so the
difference after s steps is bounded by s times the one-step figure (`trajectory_rtol`; first
order, true while a step moves the loss by much more than the rounding).

Under Keras' mixed_bfloat16 policy (train.mixed_precision) the same chain also rounds tensors to
bfloat16 (unit roundoff U_BF16 = 2^-8): `mixed_bfloat16_rtol` adds that term.
"""
from typing import Sequence

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)   # 2**-23: float32's spacing at 1.0 (2u)
U_BF16 = 2.0 ** -8                          # bfloat16's unit roundoff: 8 significand bits

def _text_tower(width: int, depth: int, mlp: int, head_dim: int, seq_len: int, embed: int):
    """Per block: LayerNorm over width, q.k over head_dim, attention over seq_len keys, the
    output projection, the MLP in and out; then the projection to embed and the L2 norm."""
    per_block = [("LayerNorm", width), ("q.k", head_dim), ("attention", seq_len),
                 ("attention out", width), ("MLP in", width), ("MLP out", mlp)]
    return ([(f"text block {b}: {what}", n) for b in range(depth) for what, n in per_block]
            + [("text projection", width), ("text norm", embed)])


def _loss(batch: int, embed: int):
    """Logits over embed, the softmax normaliser over the batch, the batch mean."""
    return [("logits", embed), ("softmax", batch), ("batch mean", batch)]


def _coatnet(batch: int, image_size: int, stem: int, conv_width: int, width: int, embed: int,
             expansion: int = 4, head_dim: int = 32):
    """models/tiny.gin's and models/demo.gin's CoAtNet shape: a stride-2 stem of two 3x3
    convolutions, one MBConv stage (stride 2), one relative-attention stage (stride 2)."""
    s1, s2, s3 = -(-image_size // 2), -(-image_size // 4), -(-image_size // 8)
    return [("stem conv 1", 27), ("stem conv 2", 9 * stem), ("stem BatchNorm", batch * s1 * s1),
            ("MBConv expand", stem), ("depthwise", 9), ("MBConv project", expansion * conv_width),
            ("stage BatchNorm", batch * s2 * s2), ("q.k", head_dim), ("attention", s3 * s3),
            ("attention out", width), ("MLP in", width), ("MLP out", 4 * width),
            ("image pooling", s3 * s3), ("image projection", width), ("image norm", embed)]


def tiny_loss_reductions(batch: int = 8):
    """The reductions along one evaluation of the contrastive loss of models/tiny.gin (32x32
    images, CoAtNet 16/32/64, text 2 blocks of width 64, embed 32): (what, terms summed)."""
    return (_coatnet(batch, 32, 16, 32, 64, 32) + _text_tower(64, 2, 128, 32, 16, 32)
            + _loss(batch, 32))


def tiny_vit_loss_reductions(batch: int = 8):
    """models/tiny.gin with test_dtensor_coverage's ViT tower (patch 8, width 64, 2 blocks of 2
    heads, MLP 128, average pooling of 16 patches)."""
    vit = [("patch embedding", 8 * 8 * 3)] + [
        (f"ViT block {b}: {what}", n) for b in range(2) for what, n in (
            ("LayerNorm", 64), ("q.k", 32), ("attention", 16), ("attention out", 64),
            ("MLP in", 64), ("MLP out", 128))] + [("pooling", 16), ("image projection", 64),
                                                  ("image norm", 32)]
    return vit + _text_tower(64, 2, 128, 32, 16, 32) + _loss(batch, 32)


def demo_loss_reductions(batch: int = 128):
    """models/demo.gin (28x28 images, CoAtNet 16/32/64 with expansion 2, text 1 block of width
    64 over 32 tokens, embed 64)."""
    return (_coatnet(batch, 28, 16, 32, 64, 64, expansion=2) + _text_tower(64, 1, 128, 32, 32, 64)
            + _loss(batch, 64))


TINY_LOSS_REDUCTIONS = tiny_loss_reductions(8)   # batch 8: the placement tests' tiny runs


def reduction_rtol(reductions: Sequence) -> float:
    """Relative bound between two evaluations of one chain of reductions in different orders:
    EPS32 * sum(n - 1) over the chain; `reductions` holds lengths n or (what, n) pairs."""
    lengths = [r[1] if isinstance(r, tuple) else r for r in reductions]
    return EPS32 * sum(n - 1 for n in lengths)


# Reductions of the chains above that run in float32 under mixed_bfloat16 (Keras computes
# normalisations in float32; the models cast the embeddings to float32 before the L2 norm and the
# contrastive loss is float32: training/precision.py): they round nothing to bfloat16.
_FLOAT32_UNDER_MIXED = ("LayerNorm", "BatchNorm", "norm", "logits", "softmax", "batch mean")


def bfloat16_roundings(reductions: Sequence) -> int:
    """How many times one evaluation of the chain rounds a tensor to bfloat16 on its way to the
    loss (the chain's bfloat16 depth): each reduction computed in bfloat16 rounds its result, and
    the elementwise op after it (bias, activation, residual add) rounds again: 2 per reduction not
    in _FLOAT32_UNDER_MIXED. `reductions`: (what, n) pairs."""
    return 2 * sum(1 for what, _ in reductions
                   if not any(name in what for name in _FLOAT32_UNDER_MIXED))


def mixed_bfloat16_rtol(reductions: Sequence) -> float:
    """Relative bound between two evaluations of one chain under mixed_bfloat16, e.g. the plain
    step and the XLA-compiled one: reduction_rtol for the float32 accumulations (bfloat16 matmuls
    and convolutions accumulate in float32 on CPU, in TensorFlow's kernels and in XLA) plus
    U_BF16 per bfloat16 rounding. The compiled program rounds at the same points or fewer (XLA
    keeps a fused intermediate in float32: excess precision), and where only one of the two
    rounds, they differ by at most U_BF16 relative; first order, the relative errors of the
    chain's roundings add, as the reductions' do. Worst case, so loose: tiny.gin's chain has 46
    roundings, 0.18 per evaluation, where the measured first-step difference is 5e-4 (rounding
    errors of random sign mostly cancel); bfloat16's 8 bits leave no tight worst-case bound."""
    return reduction_rtol(reductions) + U_BF16 * bfloat16_roundings(reductions)


def trajectory_rtol(reductions: Sequence, steps: int) -> float:
    """The bound for a loss after `steps` - 1 optimizer updates (the loss logged at step
    `steps`): `steps` times the one-evaluation bound."""
    return steps * reduction_rtol(reductions)


def assert_trajectory_close(actual: dict, desired: dict, reductions: Sequence, what: str,
                            first_step: int = 1) -> None:
    """{step: loss} against {step: loss}, same steps; the loss at step s within
    trajectory_rtol(reductions, s - first_step + 1) of the desired one."""
    assert sorted(actual) == sorted(desired), (what, sorted(actual), sorted(desired))
    for step in sorted(desired):
        bound = trajectory_rtol(reductions, step - first_step + 1)
        rel = abs(actual[step] - desired[step]) / abs(desired[step])
        assert rel <= bound, (f"{what}: step {step} {actual[step]!r} against {desired[step]!r}: "
                              f"{rel:.3g} relative, bound {bound:.3g} (float32 rounding over "
                              f"{step - first_step + 1} step(s) of this chain of reductions)")
