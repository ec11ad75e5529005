"""BASIC accumulation on 4 MirroredStrategy replicas against a plain single-device GradientTape
over the whole batch (test_accumulation.py's reference: the same micro-batches and seeds, one
global loss): the replicas' gradients sum to the tape's, with the global (cross-replica
negatives) and the local loss.

A file of its own (pytest-xdist hands out whole files): each 4-replica case costs about a minute
of CPU to trace, and the one-device cases in test_accumulation.py as much again.
"""
import numpy as np
import pytest

from strategies import mirrored_strategy
from test_accumulation import (LOSS_RTOL, _accumulated, _assert_grads_close, _batch, _model,
                               _reference)

# Slow: each case traces the accumulation on 4 replicas (20-50 s); the fast tier keeps the
# one-device cases (test_accumulation.py).
pytestmark = pytest.mark.slow


# M = 1 (one taped forward, the default) with softmax, M = 2 (the accumulation's loops) with
# sigmoid and its bias; softmax at M = 2 is the local-loss case below. M = 4 on 4 replicas (a
# micro-batch of one example per replica) is test_accumulation_chunked.py's sigmoid case, and
# M = 4 with softmax runs on one device (test_accumulation.py): the loops do not depend on M.
@pytest.mark.parametrize("kind,micro", [("softmax", 1), ("sigmoid", 2)])
def test_four_replicas_sum_to_plain_tape(kind, micro):
    strategy = mirrored_strategy(4)
    model = _model(kind, strategy=strategy)
    images, tokens = _batch(model)
    loss, grads = _accumulated(model, images, tokens, micro, strategy, loss_kind=kind)
    ref_loss, ref_grads = _reference(model, images, tokens, 4, micro, kind)
    np.testing.assert_allclose(loss, ref_loss, rtol=LOSS_RTOL)
    _assert_grads_close(grads, ref_grads, model.trainable_variables)


def test_local_loss_gives_the_same_gradients():
    strategy = mirrored_strategy(4)
    model = _model("softmax", strategy=strategy)
    images, tokens = _batch(model)
    loss, grads = _accumulated(model, images, tokens, 2, strategy, local_loss=True)
    ref_loss, ref_grads = _reference(model, images, tokens, 4, 2)
    np.testing.assert_allclose(loss, ref_loss, rtol=LOSS_RTOL)
    _assert_grads_close(grads, ref_grads, model.trainable_variables)
