"""BASIC accumulation with the chunked loss (train.loss_chunk) against a plain single-device
GradientTape over the whole batch with the UNCHUNKED loss: M = 1 and 4 micro-batches, one and
4 replicas, global and local loss, softmax and sigmoid (with the bias), and under XLA.

Tolerance: tests/test_chunked_loss.py's `tolerance` for this batch, embedding width and logit
scale (the float32 rounding bound of the loss and its embedding gradients, 8.6e-5 here, relative
to the largest gradient): the towers' backward carries that difference linearly.
"""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.training.contrastive import contrastive_gradients
from strategies import mirrored_strategy
from test_accumulation import BATCH, SEED, _accumulated, _batch, _dense, _model, _reference
from test_chunked_loss import tolerance

CHUNK = 4  # four column blocks of the 16-pair batch


def _assert_matches(model, loss, grads, ref_loss, ref_grads):
    tol = tolerance(BATCH, model.embed_dim, float(model.logit_scale.numpy()))
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    largest = max(np.abs(w).max() for w in ref_grads)
    for g, w, v in zip(grads, ref_grads, model.trainable_variables):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * largest, err_msg=v.path)


# M = 4 with softmax is slow (10-12 s alone): its two halves run in the fast tier, the loops with
# a chunked loss at M = 4 (sigmoid; the loss is a hook the loops call, the same for either kind)
# and the chunked softmax loss at M = 1.
@pytest.mark.parametrize("micro,kind", [(1, "softmax"), (1, "sigmoid"),
                                        pytest.param(4, "softmax", marks=pytest.mark.slow),
                                        (4, "sigmoid")])
def test_one_device_chunked_equals_plain_tape(kind, micro):
    model = _model(kind)
    images, tokens = _batch(model)
    loss, grads = _accumulated(model, images, tokens, micro, loss_kind=kind, loss_chunk=CHUNK)
    ref_loss, ref_grads = _reference(model, images, tokens, 1, micro, kind)
    _assert_matches(model, loss, grads, ref_loss, ref_grads)


# Each 4-replica case costs about a minute of CPU to trace: M = 1 local softmax and M = 4
# global sigmoid cover both replica layouts, both micro-batch counts and both losses. Slow (20-50
# s each): the fast tier keeps the one-device cases.
@pytest.mark.slow
@pytest.mark.parametrize("kind,micro,local_loss", [("softmax", 1, True),
                                                   ("sigmoid", 4, False)])
def test_four_replicas_chunked_sum_to_plain_tape(kind, micro, local_loss):
    strategy = mirrored_strategy(4)
    model = _model(kind, strategy=strategy)
    images, tokens = _batch(model)
    loss, grads = _accumulated(model, images, tokens, micro, strategy, loss_kind=kind,
                               local_loss=local_loss, loss_chunk=CHUNK)
    ref_loss, ref_grads = _reference(model, images, tokens, 4, micro, kind)
    _assert_matches(model, loss, grads, ref_loss, ref_grads)


def test_chunked_step_compiles_with_xla_and_matches():
    model = _model("sigmoid")
    images, tokens = _batch(model)
    step = tf.function(lambda i, t: contrastive_gradients(model, i, t, 4, seed=SEED,
                                                          loss_kind="sigmoid",
                                                          loss_chunk=CHUNK),
                       jit_compile=True)
    loss, grads = step(tf.constant(images), tf.constant(tokens))
    ref_loss, ref_grads = _reference(model, images, tokens, 1, 4, "sigmoid")
    _assert_matches(model, loss.numpy(), [_dense(g) for g in grads], ref_loss, ref_grads)


def test_step_with_loss_chunk_computes_the_in_batch_accuracy_in_blocks(monkeypatch):
    """The training step's logged accuracies built the [n, n] similarities and identity even
    with loss_chunk (32 GiB at 65,536 pairs: the first 65,536 run was killed at 24 GB before
    its first step); with loss_chunk they go in blocks too and equal the unchunked step's."""
    from basic_tf import losses
    from basic_tf.training.contrastive import ContrastiveTask
    original, chunks = losses.in_batch_accuracy, []
    monkeypatch.setattr(losses, "in_batch_accuracy", lambda i, t, chunk=0: (
        chunks.append(chunk), original(i, t, chunk=chunk))[1])
    model = _model("softmax")
    images, tokens = _batch(model)
    batch = {"images": tf.constant(images), "token_ids": tf.constant(tokens)}
    metrics = {}
    # M = 1 (was 4; the accuracies use the step's whole-batch embeddings whatever M is, and
    # tracing one taped forward costs less than the accumulation's loops): the loops with
    # loss_chunk are test_one_device_chunked_equals_plain_tape[4-sigmoid] and the end-to-end
    # test below.
    for chunk in (CHUNK, 0):
        task = ContrastiveTask(model, num_micro_batches=1, loss_chunk=chunk)
        metrics[chunk] = {k: v.numpy() for k, v in
                          tf.function(lambda: task.replica_step(batch, SEED))()[2].items()}
    assert chunks == [CHUNK, 0]
    assert metrics[CHUNK] == metrics[0]


@pytest.mark.slow
def test_training_with_loss_chunk_logs_the_unchunked_losses(tiny_data, tmp_path):
    """train() end to end (the 65,536 run's code path at batch 64, 4 micro-batches, blocks of
    16): the logged losses of the first two steps (the second after one update) equal the
    unchunked run's to float32 rounding."""
    from basic_tf import config
    from basic_tf import from_gin
    from training_helpers import bindings, scalar_events
    logged = {}
    for chunk in (0, 16):
        model_dir = str(tmp_path / f"chunk{chunk}")
        config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=64) + [
            "train.num_micro_batches = 4", f"train.loss_chunk = {chunk}",
            "train.train_steps = 2", "train.steps_per_loop = 1", "train.log_every = 1"])
        from_gin.train(model_dir)
        (_, logged[chunk]), = scalar_events(f"{model_dir}/train", "loss")
    assert sorted(logged[16]) == [1, 2]
    for step in (1, 2):
        np.testing.assert_allclose(logged[16][step], logged[0][step], rtol=1e-5)


def test_loss_chunk_not_dividing_the_batch_is_a_named_error(tiny_data, tmp_path):
    from basic_tf import config
    from basic_tf import from_gin
    from training_helpers import bindings
    config.parse(["models/tiny"], bindings(tiny_data, global_batch_size=16) + [
        "train.loss_chunk = 5", "train.train_steps = 1"])
    with pytest.raises(ValueError, match="train.loss_chunk=5 does not divide the global batch "
                                         "of 16"):
        from_gin.train(str(tmp_path / "run"))
    config.parse(["models/tiny"], bindings(tiny_data) + ["train.loss_chunk = -2",
                                                         "train.train_steps = 1"])
    with pytest.raises(ValueError, match="train.loss_chunk=-2 must be an integer"):
        from_gin.train(str(tmp_path / "run2"))
