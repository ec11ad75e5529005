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

Skipped steps: apply_update leaves weights and optimizer unchanged when the loss or gradient is
not finite, when the update would make a weight or slot non-finite, or (loss-spike guard, optional)
when the loss exceeds `loss_spike_factor` x the median loss of the last `loss_spike_window` applied
steps; the trainer then restores the task's state variables (a NaN batch must not poison
BatchNorm's moving statistics). It counts skipped steps (total, consecutive, spikes: all
checkpointed) and, at the end of the loop in which `max_consecutive_nonfinite` in a row happened,
raises NonFiniteLossError before any checkpoint is written. `state.verified_step` is the newest
step count whose weights gave a finite loss and gradient: checkpoints up to it are known good
(checkpoints.TrainingCheckpointManager keeps the newest of them and names it in the error).

On a DTensor mesh (Trainer(mesh=...), mesh_placement.py) the same step runs with the default
strategy on sharded variables and batches: one compiled step per batch in a Python loop (DTensor
cannot compile a loop over an iterator), the loop's sums replicated on the mesh.

Preemption: `stop_requested` (set by preemption.SigtermWatcher when SIGTERM arrives) ends the
current loop of steps after the step in flight; train_loop_end then raises PreemptedError and
the caller saves a checkpoint at that step.
"""
import contextlib
import time
from typing import Optional

import orbit
import tensorflow as tf
from tensorflow.experimental import dtensor

from basic_tf.parallel.dtensor import mesh_formulations, to_numpy
from basic_tf.training.train_config import MAX_LOSS_WINDOW
from basic_tf.training.update import apply_update


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss, gradient or update (or a loss spike)."""


class PreemptedError(RuntimeError):
    """SIGTERM arrived: the loop stopped early at global step `step`; save and exit."""

    def __init__(self, step: int):
        super().__init__(f"SIGTERM received: training stopped at step {step}")
        self.step = step



class TrainState(tf.Module):
    """Checkpointed counters: global step (steps run, applied or not), skipped steps, the newest
    verified step, the global batch size and the loss-spike guard's recent losses.

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
        # condition selects between vectors.
        value = tf.where(result.applied, result.loss, self.recent_losses[slot])
        self.recent_losses.assign(
            tf.tensor_scatter_nd_update(self.recent_losses, [[slot]], [value]))
        self.applied_steps.assign_add(tf.cast(result.applied, tf.int64))
        self.rejected_steps.assign_add(tf.cast(result.loss_finite & ~result.applied, tf.int64))


def guarded_update(task, optimizer, batch, seed, clip_norm: Optional[float],
                   max_loss: Optional[tf.Tensor] = None):
    """One replica's step: task gradients -> apply_update; the task's state variables
    (BatchNorm statistics) are put back when the update was not applied. -> (UpdateResult,
    metrics)."""
    state_variables = task.state_variables
    saved = [tf.identity(v) for v in state_variables]
    loss_share, grads, metrics = task.replica_step(batch, seed)
    result = apply_update(optimizer, task.trainable_variables, loss_share, grads, clip_norm,
                          max_loss)
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
    """The error that stops a run after `run` skipped steps in a row (checked at the end of
    the loop of steps first_step..last_step, before its checkpoint). The caller adds which
    checkpoint is the newest good one (checkpoints.TrainingCheckpointManager.settle)."""
    return NonFiniteLossError(
        f"{run} consecutive training steps (in the loop of steps {first_step}..{last_step}) were "
        f"skipped: non-finite loss, gradient or updated weights, or a loss spike "
        f"(train.max_consecutive_nonfinite={max_consecutive_nonfinite}); the run stops here.")


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
      max_consecutive_nonfinite, loss_spike_factor, loss_spike_window: the skipped-step guard
        (TrainConfig's fields of these names, checked there).
      seed: base of the per-step stateless seeds.
      skipped_records: data.pipeline.SkippedRecordsCounter, or None.
      use_tf_while_loop: run steps_per_loop steps in one tf.while_loop (TPU-friendly).
      mesh: the DTensor mesh the task was sharded on (mesh_placement.py), None for `strategy`.
        The iterator then yields sharded global batches (mesh_placement.MeshBatches) and the
        steps run in a Python loop, traced under the mesh formulations (models/mesh_ops.py).
    """

    def __init__(self, strategy, task, optimizer, iterator, state: TrainState, *,
                 global_batch_size: int, clip_norm: Optional[float] = 1.0,
                 max_consecutive_nonfinite: int = 5, loss_spike_factor: Optional[float] = None,
                 loss_spike_window: int = 100, seed: int = 0, skipped_records=None,
                 use_tf_while_loop: bool = True, mesh: Optional[dtensor.Mesh] = None):
        super().__init__(iterator, orbit.StandardTrainerOptions(
            use_tf_function=True, use_tf_while_loop=use_tf_while_loop and mesh is None))
        self.strategy, self.task, self.optimizer, self.state = strategy, task, optimizer, state
        self.global_batch_size = global_batch_size
        self.clip_norm, self.seed = clip_norm, seed
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.loss_spike_factor, self.loss_spike_window = loss_spike_factor, loss_spike_window
        self.skipped_records, self.mesh = skipped_records, mesh
        # Per-loop sums over applied steps (not checkpointed), updated in cross-replica context;
        # on a mesh replicated DTensor variables (a plain variable in a DTensor function would
        # be updated once per device).
        names = ("loss", "grad_norm") + tuple(task.metric_names) + ("applied_steps",)
        with dtensor.default_mesh(mesh) if mesh is not None else contextlib.nullcontext():
            self._sums = {n: tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                         name=f"sum_{n.replace('/', '_')}") for n in names}
            self._worst_run = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        # Set from another thread (preemption.SigtermWatcher); read by the loop's condition.
        self.stop_requested = tf.Variable(False, trainable=False, name="stop_requested")
        self._loop_start = None
        self._loop_first_step = 0

    def create_train_loop_fn(self):
        """orbit's loop of num_steps steps, ended early once `stop_requested` is set."""
        if not self._train_options.use_tf_while_loop:
            # autograph off as for train_step; on a mesh traced under the DTensor formulations.
            step_fn = tf.function(self.train_step_on_batch, autograph=False)
            formulations = (mesh_formulations if self.mesh is not None
                            else contextlib.nullcontext)

            def python_loop(iterator, num_steps):
                for _ in range(int(num_steps)):
                    if bool(self.stop_requested.numpy()):
                        break
                    with formulations():
                        step_fn(next(iterator))
            return python_loop

        @tf.function
        def loop_fn(iterator, num_steps):
            def body(i):
                with tf.name_scope(""):
                    self.train_step(iterator)
                return i + 1
            tf.while_loop(lambda i: (i < num_steps) & ~self.stop_requested.read_value(), body,
                          [tf.constant(0, num_steps.dtype)])
        return loop_fn

    def train_loop_begin(self):
        for v in self._sums.values():
            v.assign(0.0)
        self._worst_run.assign(0)
        self._loop_start = time.perf_counter()
        self._loop_first_step = int(self.state.step.numpy())

    def _replica_fn(self, batch, seed, max_loss):
        # Per replica: BatchNorm statistics are per replica, synchronised on read.
        return guarded_update(self.task, self.optimizer, batch, seed, self.clip_norm, max_loss)

    @tf.autograph.experimental.do_not_convert  # plain Python: converting the models costs ~50%
    def train_step(self, iterator):                # of the trace time and nothing needs it
        self.train_step_on_batch(next(iterator))

    @tf.autograph.experimental.do_not_convert
    def train_step_on_batch(self, batch):
        """One step on the global batch (PerReplica values under a strategy, sharded DTensors
        on a mesh): counters, sums and checks; see the module docstring."""
        seed = step_seed(self.seed, self.state.step)
        max_loss = self.state.loss_ceiling(self.loss_spike_factor, self.loss_spike_window)
        result, metrics = self.strategy.run(self._replica_fn, args=(batch, seed, max_loss))
        first = lambda t: self.strategy.experimental_local_results(t)[0]
        result = type(result)(*[first(t) for t in result])
        applied = result.applied
        finite_sum = lambda name, value: self._sums[name].assign_add(
            tf.where(applied, tf.cast(value, tf.float64), tf.constant(0.0, tf.float64)))
        finite_sum("loss", result.loss)
        finite_sum("grad_norm", result.grad_norm)
        for name, value in metrics.items():
            finite_sum(name, self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))
        self._sums["applied_steps"].assign_add(tf.cast(applied, tf.float64))
        if self.skipped_records is not None and "skipped" in batch:
            self.skipped_records.update(batch, self.strategy)
        self.state.record(result, self.loss_spike_window)
        run = advance_state(self.state, applied)
        self._worst_run.assign(tf.maximum(self._worst_run, run))

    def train_loop_end(self):
        step = int(self.state.step.numpy())
        steps = max(step - self._loop_first_step, 1)
        elapsed = max(time.perf_counter() - self._loop_start, 1e-9)
        worst_run = int(to_numpy(self._worst_run))
        if worst_run >= self.max_consecutive_nonfinite:
            raise nonfinite_error(worst_run, self._loop_first_step + 1, step,
                                  self.max_consecutive_nonfinite)
        if bool(self.stop_requested.numpy()):
            raise PreemptedError(step)
        sums = {name: float(to_numpy(var)) for name, var in self._sums.items()}
        applied = sums.pop("applied_steps")
        out = {name: total / applied if applied else float("nan") for name, total in sums.items()}
        out.update({
            "learning_rate": float(to_numpy(self.optimizer.learning_rate)),
            "examples_per_second": self.global_batch_size * steps / elapsed,
            "nonfinite_steps": int(self.state.nonfinite_steps.numpy()),
            "rejected_steps": int(self.state.rejected_steps.numpy()),
        })
        if self.skipped_records is not None:  # skipped_records, skipped_records/<cause>, ...
            out.update(self.skipped_records.summaries())
        out.update(self.task.summaries())
        return out
