"""One training step, top to bottom: seed -> gradients -> guard -> roll-back -> counters.

    seed        step_seed(train.seed, global step): stateless, so a resumed run replays
                dropout and stochastic depth exactly
    gradients   task.replica_step(batch, seed) per replica: this replica's share of the
                global-batch loss and its gradient shares (contrastive.py -> accumulation.py)
    guard       update.apply_update: all-reduce once, clip by the global norm, apply only a good
                update (finite loss and gradient, loss under the spike ceiling, finite result)
    roll-back   a skipped update leaves weights and slots as they were (apply_update); the
                task's state variables (BatchNorm statistics) are put back here
    counters    TrainState.record (verified step, the spike guard's recent losses) and
                TrainState.advance (global step, skipped steps in a row)

TrainStep runs it on one global batch under the run's Placement (a strategy's replicas or a
DTensor mesh); the Trainer (trainer.py) wraps it in orbit's loops and sums its results.

The batch a step takes holds numeric tensors of static shape only (what XLA and a TPU accept):
the pipeline's example ids (tf.string) and skip counters are read on the host by the Trainer
(`split_host_fields`), never inside `strategy.run`; `check_step_batch` refuses anything else by
field name when the step is traced. With `jit_compile` the whole step above is one XLA
computation (train.jit_compile: the CPU proxy of a TPU's compilation).
"""
from typing import Optional, Tuple

import tensorflow as tf

from basic_tf.training.train_config import MAX_LOSS_WINDOW
from basic_tf.training.update import UpdateResult, apply_update


# TrainState attribute -> its key under "state" in the training checkpoint, where the two differ.
# These counters were first named nonfinite_steps / consecutive_nonfinite, though they count loss
# spikes (finite) too; model_dirs written then hold them under those keys, and
# assert_existing_objects_matched refuses a checkpoint missing a key, so the keys stay.
CHECKPOINT_KEYS = {"skipped_steps": "nonfinite_steps",
                   "consecutive_skipped": "consecutive_nonfinite"}


class TrainState:
    """Checkpointed counters: global step (steps run, applied or not), skipped steps, the newest
    verified step, the global batch size and the loss-spike guard's recent losses.

    A step is skipped for a non-finite loss, gradient or update, or a finite loss spike:
    `skipped_steps` / `consecutive_skipped` count all of them, `rejected_steps` those whose loss
    was finite. `checkpointed` is the tf.Module a training checkpoint holds under "state": these
    variables under their checkpoint keys (CHECKPOINT_KEYS, else the attribute name).

    Create inside strategy.scope(); updated in cross-replica context only.
    """

    def __init__(self):
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                name="global_step")
        self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                         name="skipped_steps")
        self.consecutive_skipped = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               aggregation=agg, name="consecutive_skipped")
        # Finite loss, update refused: a loss spike, or an update that made a weight non-finite.
        self.rejected_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                          name="rejected_steps")
        # -1: no step yet gave a finite loss. Checkpoints at steps <= this are known good.
        self.verified_step = tf.Variable(-1, dtype=tf.int64, trainable=False, aggregation=agg,
                                         name="verified_step")
        self.global_batch_size = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                             name="global_batch_size")
        self.recent_losses = tf.Variable(tf.zeros([MAX_LOSS_WINDOW]), trainable=False,
                                         aggregation=agg, name="recent_losses")
        self.applied_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                         name="applied_steps")
        self.checkpointed = tf.Module(name="train_state")
        for name, variable in list(vars(self).items()):
            if isinstance(variable, tf.Variable):
                setattr(self.checkpointed, CHECKPOINT_KEYS.get(name, name), variable)

    def loss_ceiling(self, factor: Optional[float], window: int) -> tf.Tensor:
        """float32 scalar: factor x median of the last `window` applied losses; +inf without a
        factor or before `window` steps were applied."""
        if not factor:
            return tf.constant(float("inf"))
        median = tf.sort(self.recent_losses[:window])[window // 2]
        armed = self.applied_steps >= window
        return tf.where(armed, factor * median, tf.constant(float("inf")))

    def record(self, result, window: int) -> None:
        """Counts the step's verification and, if applied, puts its loss in the ring."""
        self.verified_step.assign(tf.where(result.loss_finite, self.step, self.verified_step))
        slot = tf.cast(self.applied_steps % window, tf.int32)
        # Scalar selections only: DTensor (TF 2.20) segfaults on a tf.where whose scalar
        # condition selects between vectors. tf.gather, not recent_losses[slot]: XLA takes no
        # strided slice at a computed index.
        value = tf.where(result.applied, result.loss, tf.gather(self.recent_losses, slot))
        self.recent_losses.assign(
            tf.tensor_scatter_nd_update(self.recent_losses, [[slot]], [value]))
        self.applied_steps.assign_add(tf.cast(result.applied, tf.int64))
        self.rejected_steps.assign_add(tf.cast(result.loss_finite & ~result.applied, tf.int64))

    def advance(self, applied: tf.Tensor) -> tf.Tensor:
        """Counts one step (applied or not); returns the run of consecutive skipped steps."""
        run = tf.where(applied, tf.constant(0, tf.int64), self.consecutive_skipped + 1)
        self.consecutive_skipped.assign(run)
        self.skipped_steps.assign_add(1 - tf.cast(applied, tf.int64))
        self.step.assign_add(1)
        return run


# Fields of a training batch (data.pipeline) the host reads and the replica step never does: the
# example ids (tf.string: XLA and a TPU take no strings) and the pipeline's skip counters (summed
# over replicas into data.skips.SkippedRecordsCounter).
HOST_FIELDS = ("example_id", "skipped", "skipped_by_cause", "captions_cut")


def split_host_fields(batch: dict) -> Tuple[dict, dict]:
    """batch -> (the fields the step takes, the HOST_FIELDS it has)."""
    return ({k: v for k, v in batch.items() if k not in HOST_FIELDS},
            {k: v for k, v in batch.items() if k in HOST_FIELDS})


def check_step_batch(batch: dict, first_replica) -> None:
    """ValueError naming the field when a batch for the replica step holds a non-numeric tensor
    or one of dynamic shape (XLA and TPU infeed take neither). first_replica: a per-replica
    value -> its first replica's tensor (Placement.first_replica). Runs at trace time."""
    for key, value in batch.items():
        t = first_replica(value)
        dtype = tf.as_dtype(t.dtype)
        if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
            raise ValueError(f"training batch field {key!r} is {dtype.name}: the replica step "
                             "takes numeric tensors only (XLA, TPU); read it on the host "
                             "(training.step.HOST_FIELDS) or leave it out of the dataset")
        if not t.shape.is_fully_defined():
            raise ValueError(f"training batch field {key!r} has the dynamic shape {t.shape}: "
                             "the replica step takes static shapes only (XLA, TPU); batch the "
                             "training dataset with drop_remainder=True")


def step_seed(base_seed: int, step: tf.Tensor) -> tf.Tensor:
    """int32 [2] stateless seed of training step `step` (the same on every replica; the
    accumulation folds in the replica and micro-batch)."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([base_seed, 0], tf.int32), tf.cast(step, tf.int32))


class TrainStep:
    """`step(batch) -> (UpdateResult, metrics, run)` on one global batch (PerReplica values under
    a strategy, sharded DTensors on a mesh): the first replica's UpdateResult (identical on
    every replica), the task's metrics averaged over replicas, and the int64 run of consecutive
    skipped steps after this one. Call it inside a tf.function (the Trainer's loop).

    clip_norm, loss_spike_factor, loss_spike_window, seed, jit_compile: TrainConfig's fields.
    jit_compile compiles the whole step (the replica step, the counters) as one XLA function;
    under TPUStrategy strategy.run compiles the replica step with XLA anyway, and the counters
    run beside it. Several replicas of another strategy: refused (ValueError naming the field).
    """

    def __init__(self, placement, task, optimizer, state: TrainState, *,
                 clip_norm: Optional[float], loss_spike_factor: Optional[float],
                 loss_spike_window: int, seed: int, jit_compile: bool = False):
        self.placement, self.task, self.optimizer, self.state = placement, task, optimizer, state
        self.clip_norm, self.seed = clip_norm, seed
        self.loss_spike_factor, self.loss_spike_window = loss_spike_factor, loss_spike_window
        self._compiled = None
        tpu = isinstance(placement.strategy, tf.distribute.TPUStrategy)
        if jit_compile and not tpu:
            if placement.mesh is not None or placement.num_replicas > 1:
                raise ValueError(
                    f"train.jit_compile=True compiles a step of one replica (default or "
                    f"OneDevice strategy) or runs on --strategy=tpu; this run has "
                    f"{placement.num_replicas} replicas of "
                    f"{type(placement.strategy).__name__}"
                    f"{' on a DTensor mesh' if placement.mesh is not None else ''}: drop one")
            self._compiled = tf.function(self._step, jit_compile=True, autograph=False)
        # Under XLA few large ops compile faster than per-variable ones: AdamW updated and
        # checked over all variables concatenated (flat_update.py), other optimizers' updates
        # checked in one concatenation (update.all_finite). Elsewhere per variable (no copies).
        self._flat_check = self._compiled is not None or tpu

    def __call__(self, batch):
        check_step_batch(batch, self.placement.first_replica)
        return (self._compiled or self._step)(batch)

    def _step(self, batch):
        seed = step_seed(self.seed, self.state.step)
        max_loss = self.state.loss_ceiling(self.loss_spike_factor, self.loss_spike_window)
        result, metrics = self.placement.strategy.run(self._replica_step,
                                                      args=(batch, seed, max_loss))
        result = UpdateResult(*[self.placement.first_replica(t) for t in result])
        metrics = {name: self.placement.mean(value) for name, value in metrics.items()}
        self.state.record(result, self.loss_spike_window)
        run = self.state.advance(result.applied)
        return result, metrics, run

    def _replica_step(self, batch, seed, max_loss):
        """One replica: gradients -> apply_update -> the task's state variables (BatchNorm
        statistics, per replica, synchronised on read) put back if the update was skipped."""
        state_variables = self.task.state_variables
        saved = [tf.identity(v) for v in state_variables]
        loss_share, grads, metrics = self.task.replica_step(batch, seed)
        result = apply_update(self.optimizer, self.task.trainable_variables, loss_share, grads,
                              self.clip_norm, max_loss, flat_check=self._flat_check)
        for v, old in zip(state_variables, saved):
            # The condition broadcast explicitly: DTensor (TF 2.20) segfaults compiling a
            # tf.where whose scalar condition selects between tensors.
            keep_new = tf.fill(tf.shape(old), result.applied)
            v.assign(tf.where(keep_new, tf.convert_to_tensor(v), old))
        return result, metrics
