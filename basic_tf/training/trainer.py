"""The orbit trainer: loops of steps (step.py: next batch -> gradients -> guard -> roll-back ->
counters), per-loop sums, the stop for skipped steps and for preemption.

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
raises SkippedStepsError before any checkpoint is written. `state.verified_step` is the newest
step count whose weights gave a finite loss and gradient: checkpoints up to it are known good
(checkpoints.TrainingCheckpointManager keeps the newest of them and names it in the error).

The Placement (placement.py) says how the loop runs: under a strategy orbit compiles the loop
of steps; on a DTensor mesh the same step runs on sharded variables and batches, one compiled
step per batch in a Python loop (DTensor cannot compile a loop over an iterator), the loop's
sums replicated on the mesh.

Preemption: `stop_requested` (set by preemption.StopSignalWatcher on SIGTERM or SIGINT) ends the
current loop of steps after the step in flight; train_loop_end then raises PreemptedError and
the caller saves a checkpoint at that step.
"""
import time
from typing import Optional

import orbit
import tensorflow as tf

from basic_tf.parallel.dtensor import to_numpy
from basic_tf.training.step import TrainState, TrainStep, split_host_fields


class SkippedStepsError(RuntimeError):
    """Too many consecutive steps were skipped: a non-finite loss, gradient or update, or a loss
    spike."""


class PreemptedError(RuntimeError):
    """SIGTERM or SIGINT arrived: the loop stopped early at global step `step`; save and exit."""

    def __init__(self, step: int):
        super().__init__(f"training stopped at step {step}")
        self.step = step



def _skipped_run_error(run: int, first_step: int, last_step: int,
                       max_consecutive_nonfinite: int) -> SkippedStepsError:
    """The error that stops a run after `run` skipped steps in a row (checked at the end of
    the loop of steps first_step..last_step, before its checkpoint). The caller adds which
    checkpoint is the newest good one (checkpoints.TrainingCheckpointManager.settle)."""
    return SkippedStepsError(
        f"{run} consecutive training steps (in the loop of steps {first_step}..{last_step}) were "
        f"skipped: non-finite loss, gradient or updated weights, or a loss spike "
        f"(train.max_consecutive_nonfinite={max_consecutive_nonfinite}); the run stops here.")


class Trainer(orbit.StandardTrainer):
    """orbit.StandardTrainer running `task` with `optimizer` on batches from `iterator`.

    Args:
      placement: the run's Placement (placement.py): the strategy or mesh everything was
        built on.
      task: see the module docstring.
      optimizer: placement.place_task(task).
      iterator: placement.input(...): per-replica batches, or sharded global batches.
      state: TrainState.
      global_batch_size: examples per step over all replicas (for examples/s).
      clip_norm: global-norm clipping of the summed gradient; None for none.
      max_consecutive_nonfinite, loss_spike_factor, loss_spike_window: the skipped-step guard
        (TrainConfig's fields of these names, checked there).
      seed: base of the per-step stateless seeds.
      skipped_records: data.pipeline.SkippedRecordsCounter, or None.
      use_tf_while_loop: run steps_per_loop steps in one tf.while_loop (TPU-friendly; where
        the placement can compile a loop over its iterator).
      jit_compile: compile each step whole with XLA (step.TrainStep).
    """

    def __init__(self, placement, task, optimizer, iterator, state: TrainState, *,
                 global_batch_size: int, clip_norm: Optional[float] = 1.0,
                 max_consecutive_nonfinite: int = 5, loss_spike_factor: Optional[float] = None,
                 loss_spike_window: int = 100, seed: int = 0, skipped_records=None,
                 use_tf_while_loop: bool = True, jit_compile: bool = False):
        self._use_while_loop = use_tf_while_loop and placement.compiles_loops
        super().__init__(iterator, orbit.StandardTrainerOptions(
            use_tf_function=True, use_tf_while_loop=self._use_while_loop))
        self.placement, self.task, self.optimizer, self.state = placement, task, optimizer, state
        self.step = TrainStep(placement, task, optimizer, state, clip_norm=clip_norm,
                              loss_spike_factor=loss_spike_factor,
                              loss_spike_window=loss_spike_window, seed=seed,
                              jit_compile=jit_compile)
        self.global_batch_size = global_batch_size
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.skipped_records = skipped_records
        # Per-loop sums over applied steps (not checkpointed), updated in cross-replica context;
        # on a mesh replicated DTensor variables (a plain variable in a DTensor function would
        # be updated once per device).
        names = ("loss", "grad_norm") + tuple(task.metric_names) + ("applied_steps",)
        with placement.loop_variables_scope():
            self._sums = {n: tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                         name=f"sum_{n.replace('/', '_')}") for n in names}
            self._worst_run = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        # Set from another thread (preemption.StopSignalWatcher); read by the loop's condition.
        self.stop_requested = tf.Variable(False, trainable=False, name="stop_requested")
        self._loop_start = None
        self._loop_first_step = 0

    def create_train_loop_fn(self):
        """orbit's loop of num_steps steps, ended early once `stop_requested` is set."""
        if not self._use_while_loop:
            # autograph off as for train_step; traced in the placement's context (on a mesh the
            # models' DTensor formulations).
            step_fn = tf.function(self.train_step_on_batch, autograph=False)

            def python_loop(iterator, num_steps):
                for _ in range(int(num_steps)):
                    if bool(self.stop_requested.numpy()):
                        break
                    with self.placement.trace_context():
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

    @tf.autograph.experimental.do_not_convert  # plain Python: converting the models costs ~50%
    def train_step(self, iterator):                # of the trace time and nothing needs it
        self.train_step_on_batch(next(iterator))

    @tf.autograph.experimental.do_not_convert
    def train_step_on_batch(self, batch):
        """One step on the global batch's numeric fields (step.TrainStep), then the loop's sums;
        the host fields (example ids, skip counters) are read here, outside strategy.run."""
        batch, host = split_host_fields(batch)
        result, metrics, run = self.step(batch)
        applied = result.applied
        finite_sum = lambda name, value: self._sums[name].assign_add(
            tf.where(applied, tf.cast(value, tf.float64), tf.constant(0.0, tf.float64)))
        finite_sum("loss", result.loss)
        finite_sum("grad_norm", result.grad_norm)
        for name, value in metrics.items():
            finite_sum(name, value)
        self._sums["applied_steps"].assign_add(tf.cast(applied, tf.float64))
        if self.skipped_records is not None and "skipped" in host:
            self.skipped_records.update(host, self.placement.strategy)
        self._worst_run.assign(tf.maximum(self._worst_run, run))

    def train_loop_end(self):
        step = int(self.state.step.numpy())
        steps = max(step - self._loop_first_step, 1)
        elapsed = max(time.perf_counter() - self._loop_start, 1e-9)
        worst_run = int(to_numpy(self._worst_run))
        if worst_run >= self.max_consecutive_nonfinite:
            raise _skipped_run_error(worst_run, self._loop_first_step + 1, step,
                                     self.max_consecutive_nonfinite)
        if bool(self.stop_requested.numpy()):
            raise PreemptedError(step)
        sums = {name: float(to_numpy(var)) for name, var in self._sums.items()}
        applied = sums.pop("applied_steps")
        out = {name: total / applied if applied else float("nan") for name, total in sums.items()}
        out.update({
            "learning_rate": float(to_numpy(self.optimizer.learning_rate)),
            "examples_per_second": self.global_batch_size * steps / elapsed,
            "skipped_steps": int(self.state.skipped_steps.numpy()),
            "rejected_steps": int(self.state.rejected_steps.numpy()),
        })
        if self.skipped_records is not None:  # skipped_records, skipped_records/<cause>, ...
            out.update(self.skipped_records.summaries())
        out.update(self.task.summaries())
        return out
