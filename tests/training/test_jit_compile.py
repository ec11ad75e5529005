"""train.jit_compile: the whole training step compiled with XLA (the CPU proxy of a TPU) trains
as the plain step does, skipped step and roll-back included; and the batch reaching the replica
step is numeric and statically shaped."""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.training.contrastive import ContrastiveTask
from basic_tf.training.optimizers import make_optimizer
from basic_tf.training.placement import Placement
from basic_tf.training.step import TrainState, TrainStep, check_step_batch, split_host_fields
from float32_bounds import tiny_loss_reductions, trajectory_rtol
from strategies import mirrored_strategy

STEPS, POISONED, BATCH, LEARNING_RATE = 5, 2, 8, 3e-3


def _batches():
    """STEPS numeric batches of models/tiny.gin's shapes; the POISONED one has a NaN pixel (a
    non-finite loss: the step is skipped, weights, slots and BatchNorm statistics put back)."""
    rng = np.random.default_rng(0)
    out = []
    for step in range(STEPS):
        images = rng.uniform(size=(BATCH, 32, 32, 3)).astype(np.float32)
        if step == POISONED:
            images[0, 0, 0, 0] = np.nan
        tokens = rng.integers(2, 60, size=(BATCH, 16)).astype(np.int32)
        tokens[:, 10:] = 0
        out.append({"images": tf.constant(images), "token_ids": tf.constant(tokens)})
    return out


def _train(kind: str, jit_compile: bool, initial) -> dict:
    """STEPS steps of a fresh tiny DualEncoder (weights `initial`) -> losses, weights, state."""
    keras.utils.set_random_seed(0)
    model = from_gin.dual_encoder()
    model.set_weights(initial)
    task = ContrastiveTask(model, num_micro_batches=2)
    placement = Placement(optimizer_fn=functools.partial(
        make_optimizer, kind=kind, learning_rate=LEARNING_RATE,
        weight_decay=1e-4))
    optimizer = placement.place_task(task)
    state = TrainState()
    step = TrainStep(placement, task, optimizer, state, clip_norm=1.0, loss_spike_factor=None,
                     loss_spike_window=100, seed=0, jit_compile=jit_compile)
    run = tf.function(step, autograph=False)  # as the Trainer's loop calls it
    losses = [float(run(batch)[0].loss) for batch in _batches()]
    return {"losses": losses, "weights": [w.copy() for w in model.get_weights()],
            "skipped": int(state.skipped_steps.numpy()),
            "updates": int(optimizer.iterations.numpy())}


@pytest.fixture(scope="module")
def initial_weights():
    config.parse(["models/tiny"], ["coatnet_config.dropout_rate = 0.1",
                                   "coatnet_config.drop_path_rate = 0.1",
                                   "text_tower_config.dropout_rate = 0.1"])
    keras.utils.set_random_seed(0)
    return from_gin.dual_encoder().get_weights()


@pytest.mark.slow  # ~35 s each: a step traced twice, one compiled with XLA
@pytest.mark.parametrize("kind", ["adamw", "adafactorw"])
def test_compiled_step_trains_as_the_plain_step(initial_weights, kind):
    plain = _train(kind, False, initial_weights)
    compiled = _train(kind, True, initial_weights)
    for run in (plain, compiled):  # the poisoned step was skipped, and only it
        assert run["skipped"] == 1 and run["updates"] == STEPS - 1, run
        assert np.isnan(run["losses"][POISONED])
        assert all(np.isfinite(w).all() for w in run["weights"])
    reductions = tiny_loss_reductions(BATCH)
    for s in range(STEPS):
        if s == POISONED:
            continue
        # The loss at step s has seen the rounding of the updates before it (s + 1 evaluations
        # of the chain of reductions; the skipped step applied nothing, so counted anyway).
        bound = trajectory_rtol(reductions, s + 1)
        rel = abs(compiled["losses"][s] - plain["losses"][s]) / abs(plain["losses"][s])
        assert rel <= bound, (kind, s, compiled["losses"][s], plain["losses"][s], rel, bound)
    # Weights. AdamW's and AdaFactorW's updates are normalised per element: an update moves a
    # weight by learning_rate x u with |u| <= 1 (here). Where a gradient element is well above
    # its rounding, a relative change d of it changes u by at most d, so the weights differ by at
    # most updates x learning_rate x d, d the trajectory bound: the rounding bound `tight`. Where
    # a gradient element is within rounding of 0 its sign is rounding's choice and u may flip: up
    # to 2 x learning_rate per update. Such elements are few (measured: 0.18% of AdaFactorW's,
    # max 6.0e-3 = one flip); 1% are allowed, all within the flip bound. A lost, doubled or
    # misplaced update moves nearly every weight by ~learning_rate and fails the first check.
    diffs = np.concatenate([np.abs(a - b).ravel()
                            for a, b in zip(compiled["weights"], plain["weights"])])
    updates = STEPS - 1
    tight = updates * LEARNING_RATE * trajectory_rtol(reductions, STEPS)
    assert np.quantile(diffs, 0.99) <= tight, (kind, np.quantile(diffs, 0.99), tight)
    assert diffs.max() <= 2 * updates * LEARNING_RATE, (kind, diffs.max())


def test_host_fields_stay_out_of_the_step_batch():
    batch = {"images": tf.zeros([2, 4, 4, 3]), "token_ids": tf.zeros([2, 3], tf.int32),
             "example_id": tf.constant(["a", "b"]), "skipped": tf.zeros([2], tf.int32),
             "skipped_by_cause": tf.zeros([2, 5], tf.int32), "captions_cut": tf.zeros([2], tf.int32)}
    step_batch, host = split_host_fields(batch)
    assert sorted(step_batch) == ["images", "token_ids"]
    assert sorted(host) == ["captions_cut", "example_id", "skipped", "skipped_by_cause"]
    check_step_batch(step_batch, lambda t: t)
    with pytest.raises(ValueError, match=r"field 'example_id' is string.*host"):
        check_step_batch({"example_id": batch["example_id"]}, lambda t: t)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int32)])
    def dynamic(ids):
        check_step_batch({"token_ids": ids}, lambda t: t)
    with pytest.raises(ValueError, match=r"field 'token_ids' has the dynamic shape.*drop_remainder"):
        dynamic.get_concrete_function()


def test_jit_compile_refuses_several_replicas():
    placement = Placement(mirrored_strategy(2))
    with pytest.raises(ValueError, match=r"train.jit_compile=True .* 2 replicas of "
                                         r"MirroredStrategy"):
        TrainStep(placement, None, None, None, clip_norm=None, loss_spike_factor=None,
                  loss_spike_window=1, seed=0, jit_compile=True)
