"""The orbit trainer: one step = next batch -> task's gradients -> apply_update -> counters.

The trainer knows nothing of what is trained: a *task* (contrastive.ContrastiveTask for stage
(b), pretrain.PretrainTask for stage (a)) gives

  task.model                  the keras.Model checkpointed under the key "model"
  task.trainable_variables    what the optimizer updates (a locked tower's are not there)
  task.state_variables        non-trainable variables the forward pass updates (BatchNorm
                              statistics): put back as they were when a step is skipped
  task.replica_step(batch, seed) -> (loss_share, grads, metrics)   in a replica context:
      this replica's share of the global-batch loss, its gradient shares aligned with
      trainable_variables, and a dict of float32 scalar metrics to average over replicas
  task.metric_names           the keys of those metrics
  task.summaries()            eager scalars read at the end of each loop (e.g. temperature)

Every step is a pure function of the checkpointed state: the global step picks the stateless
seed (dropout and stochastic depth replay exactly after a resume), the optimizer's update count
picks the learning rate, and the data iterator lives in the checkpoint.

Non-finite steps: apply_update leaves weights and optimizer unchanged and the trainer restores
the task's state variables (a NaN batch must not poison BatchNorm's moving statistics); it counts
them (total and
consecutive, both checkpointed) and, at the end of the loop in which `max_consecutive_nonfinite`
in a row happened, raises NonFiniteLossError before orbit saves a checkpoint, so the last
checkpoint on disk is a good one.
"""
import time
from typing import Optional

import orbit
import tensorflow as tf

from basic_tf.training.update import apply_update


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class TrainState(tf.Module):
    """Checkpointed counters: global step (steps run, applied or not) and non-finite steps.

    Create inside strategy.scope(); updated in cross-replica context only.
    """

    def __init__(self):
        super().__init__(name="train_state")
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                name="global_step")
        self.nonfinite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                           name="nonfinite_steps")
        self.consecutive_nonfinite = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                 aggregation=agg, name="consecutive_nonfinite")


def guarded_update(task, optimizer, batch, seed, clip_norm: Optional[float]):
    """One replica's step: task gradients -> apply_update; the task's state variables
    (BatchNorm statistics) are put back when the update was not applied. -> (UpdateResult,
    metrics). Shared by Trainer and the DTensor mesh loop (mesh_loop.py)."""
    state_variables = task.state_variables
    saved = [tf.identity(v) for v in state_variables]
    loss_share, grads, metrics = task.replica_step(batch, seed)
    result = apply_update(optimizer, task.trainable_variables, loss_share, grads, clip_norm)
    for v, old in zip(state_variables, saved):
        # The condition broadcast explicitly: DTensor (TF 2.20) segfaults compiling a tf.where
        # whose scalar condition selects between tensors.
        keep_new = tf.fill(tf.shape(old), result.applied)
        v.assign(tf.where(keep_new, tf.convert_to_tensor(v), old))
    return result, metrics


def advance_state(state: "TrainState", applied: tf.Tensor) -> tf.Tensor:
    """Counts one step (applied or not) in `state`; returns the consecutive non-finite run."""
    run = tf.where(applied, tf.constant(0, tf.int64), state.consecutive_nonfinite + 1)
    state.consecutive_nonfinite.assign(run)
    state.nonfinite_steps.assign_add(1 - tf.cast(applied, tf.int64))
    state.step.assign_add(1)
    return run


def nonfinite_error(run: int, first_step: int, last_step: int,
                    max_consecutive_nonfinite: int) -> NonFiniteLossError:
    """The error that stops a run after `run` non-finite steps in a row (checked at the end of
    the loop of steps first_step..last_step, before its checkpoint)."""
    return NonFiniteLossError(
        f"{run} consecutive training steps (in the loop of steps {first_step}..{last_step}) had "
        f"a non-finite loss or gradient norm (max_consecutive_nonfinite="
        f"{max_consecutive_nonfinite}); the run stops here and the last checkpoint in model_dir "
        "is the last good state. Lower make_optimizer.learning_rate or train.clip_norm, or check "
        "the data, then rerun the same command to resume from that checkpoint.")


def step_seed(base_seed: int, step: tf.Tensor) -> tf.Tensor:
    """int32 [2] stateless seed of training step `step` (the same on every replica; the
    accumulation folds in the replica and micro-batch)."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([base_seed, 0], tf.int32), tf.cast(step, tf.int32))


class Trainer(orbit.StandardTrainer):
    """orbit.StandardTrainer running `task` with `optimizer` on batches from `iterator`.

    Args:
      strategy: the tf.distribute strategy everything was built under.
      task: see the module docstring.
      optimizer: built on task.trainable_variables inside strategy.scope().
      iterator: yields per-replica batches (data.distributed.CheckpointableDistributedIterator).
      state: TrainState.
      global_batch_size: examples per step over all replicas (for examples/s).
      clip_norm: global-norm clipping of the summed gradient; None for none.
      max_consecutive_nonfinite: stop after this many non-finite steps in a row.
      seed: base of the per-step stateless seeds.
      skipped_records: data.pipeline.SkippedRecordsCounter, or None.
      use_tf_while_loop: run steps_per_loop steps in one tf.while_loop (TPU-friendly).
    """

    def __init__(self, strategy, task, optimizer, iterator, state: TrainState, *,
                 global_batch_size: int, clip_norm: Optional[float] = 1.0,
                 max_consecutive_nonfinite: int = 5, seed: int = 0, skipped_records=None,
                 use_tf_while_loop: bool = True):
        super().__init__(iterator, orbit.StandardTrainerOptions(
            use_tf_function=True, use_tf_while_loop=use_tf_while_loop))
        if max_consecutive_nonfinite < 1:
            raise ValueError(f"max_consecutive_nonfinite={max_consecutive_nonfinite} must be >= 1")
        self.strategy, self.task, self.optimizer, self.state = strategy, task, optimizer, state
        self.global_batch_size = global_batch_size
        self.clip_norm, self.seed = clip_norm, seed
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.skipped_records = skipped_records
        # Per-loop sums over applied steps (not checkpointed), updated in cross-replica context.
        names = ("loss", "grad_norm") + tuple(task.metric_names) + ("applied_steps",)
        self._sums = {n: tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                     name=f"sum_{n.replace('/', '_')}") for n in names}
        self._worst_run = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._loop_start = None
        self._loop_first_step = 0

    def train_loop_begin(self):
        for v in self._sums.values():
            v.assign(0.0)
        self._worst_run.assign(0)
        self._loop_start = time.perf_counter()
        self._loop_first_step = int(self.state.step.numpy())

    def _replica_fn(self, batch, seed):
        # Per replica: BatchNorm statistics are per replica, synchronised on read.
        return guarded_update(self.task, self.optimizer, batch, seed, self.clip_norm)

    @tf.autograph.experimental.do_not_convert  # plain Python: converting the models costs ~50%
    def train_step(self, iterator):                # of the trace time and nothing needs it
        batch = next(iterator)
        seed = step_seed(self.seed, self.state.step)
        result, metrics = self.strategy.run(self._replica_fn, args=(batch, seed))
        first = lambda t: self.strategy.experimental_local_results(t)[0]
        applied = first(result.applied)
        finite_sum = lambda name, value: self._sums[name].assign_add(
            tf.where(applied, tf.cast(value, tf.float64), tf.constant(0.0, tf.float64)))
        finite_sum("loss", first(result.loss))
        finite_sum("grad_norm", first(result.grad_norm))
        for name, value in metrics.items():
            finite_sum(name, self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))
        self._sums["applied_steps"].assign_add(tf.cast(applied, tf.float64))
        if self.skipped_records is not None and "skipped" in batch:
            self.skipped_records.update(batch, self.strategy)
        run = advance_state(self.state, applied)
        self._worst_run.assign(tf.maximum(self._worst_run, run))

    def train_loop_end(self):
        step = int(self.state.step.numpy())
        steps = max(step - self._loop_first_step, 1)
        elapsed = max(time.perf_counter() - self._loop_start, 1e-9)
        if int(self._worst_run.numpy()) >= self.max_consecutive_nonfinite:
            raise nonfinite_error(int(self._worst_run.numpy()), self._loop_first_step + 1, step,
                                  self.max_consecutive_nonfinite)
        applied = self._sums["applied_steps"].numpy()
        out = {name: float(var.numpy() / applied) if applied else float("nan")
               for name, var in self._sums.items() if name != "applied_steps"}
        out.update({
            "learning_rate": float(self.optimizer.learning_rate.numpy()),
            "examples_per_second": self.global_batch_size * steps / elapsed,
            "nonfinite_steps": int(self.state.nonfinite_steps.numpy()),
        })
        if self.skipped_records is not None:
            out["skipped_records"] = int(self.skipped_records.total.numpy())
        out.update(self.task.summaries())
        return out
