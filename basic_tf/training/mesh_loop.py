"""Training on a DTensor mesh (model parallelism, issue 7): what `loop.train` runs for
`train.mesh='batch:B,model:M'` (tools/train.py --mesh).

    task (built by loop.train, unsharded, same initialisation as one device)
    -> shard_model (layout_rules) -> make_optimizer, shard_optimizer -> counters replicated on
    the mesh -> checkpoint manager (restore) -> Python loop: make_dataset's global batch on the
    host -> shard_batch on "batch" -> one compiled step per batch

The step is the trainer's (trainer.guarded_update: task gradients, apply_update with global-norm
clipping, BatchNorm statistics put back on a non-finite step; trainer.advance_state), traced with
`autograph=False` under ops.mesh_formulations(). A plain loop, not orbit's Trainer: DTensor
crashed (segfault) compiling orbit's loop over a DTensor iterator, and ordinary variables (the
trainer's per-loop sums) in a DTensor function are updated once per device; the loop's sums are
kept on the host instead.

Checkpoints have the trainer's keys (model, optimizer, state, skipped_records) without "data":
the input position is not saved, so a resumed run restarts the input pipeline from its first
batch (logged). The model is saved under "model" as on one device, so a sharded checkpoint
restores into an unsharded DualEncoder: `tools/export.py --checkpoint=<model_dir>` and the
zero-shot tools read it as they are. Not on a mesh: evaluation during training, stage (a),
mixed precision, other tf.distribute strategies, and the in-batch accuracies in the logs
(DTensor cannot expand their ArgMax over the batch-sharded similarities). A save of DTensor
variables costs a compilation (TF retraces its sharded save on every call), so checkpoints are
written at multiples of checkpoint_interval and at the end only.
"""
import os
import time
from typing import Callable, Optional

import gin
import tensorflow as tf
from absl import logging
from tensorflow.experimental import dtensor

from basic_tf.data.pipeline import SkippedRecordsCounter
from basic_tf.parallel import dtensor as pd
from basic_tf.parallel.dtensor import ops
from basic_tf.parallel.dtensor.mesh import default_device_type
from basic_tf.training import checkpoints, progress
from basic_tf.training.optimizers import make_optimizer
from basic_tf.training.trainer import (NonFiniteLossError, TrainState, advance_state,
                                       guarded_update, nonfinite_error, step_seed)

BATCH_KEYS = ("images", "token_ids", "skipped")  # what the step reads of a batch


@gin.configurable(denylist=["flag"])
def make_training_mesh(flag: str, grappler: bool = True) -> dtensor.Mesh:
    """'batch:B,model:M' -> a mesh over ALL local devices of the accelerator type (CPU if none):
    a mesh that leaves devices idle is an error, as is one larger than the devices visible.

    grappler=False turns TF's graph optimizer off for the process: it rewrites each device's
    function of a DTensor program separately, which on 8 CPUs is about half of the step's
    compilation and most of each sharded checkpoint save's (the tests use this)."""
    if not grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    sizes = pd.parse_mesh_flag(flag)
    device_type = default_device_type()
    count = len(tf.config.list_logical_devices(device_type))
    if sizes["batch"] * sizes["model"] != count:
        raise ValueError(
            f"train.mesh={flag!r} has {sizes['batch']} x {sizes['model']} = "
            f"{sizes['batch'] * sizes['model']} devices but {count} {device_type} devices are "
            f"visible; use a mesh of exactly {count} devices (or, on CPU, "
            f"--virtual_cpu_devices={sizes['batch'] * sizes['model']})")
    return pd.make_mesh(**sizes, device_type=device_type)


def _shard_task(task, mesh: dtensor.Mesh):
    """Moves the model and a fresh optimizer onto the mesh; -> optimizer. A model axis that does
    not divide a sharded dimension raises the layout code's error naming the variable."""
    plan = pd.shard_model(task.model, mesh, pd.layout_rules())
    optimizer = make_optimizer(task.trainable_variables)
    pd.shard_optimizer(optimizer, plan, mesh)
    return optimizer


def train_on_mesh(model_dir: str, mesh: dtensor.Mesh, task, dataset_fn: Callable, *,
                  train_steps: int, steps_per_loop: int, checkpoint_interval: int,
                  max_checkpoints: int, log_every: Optional[int], clip_norm: Optional[float],
                  max_consecutive_nonfinite: int, seed: int) -> dict:
    """Trains `task` (a ContrastiveTask, built but not sharded) on `mesh` until global step
    `train_steps`; the arguments mean what they mean for loop.train. -> {"step", "progress",
    "eval": None, "preempted": False, "checkpoint"} like loop.train (no SIGTERM handling
    on a mesh)."""
    if max_consecutive_nonfinite < 1:
        raise ValueError(f"max_consecutive_nonfinite={max_consecutive_nonfinite} must be >= 1")
    optimizer = _shard_task(task, mesh)
    with dtensor.default_mesh(mesh):  # counters become replicated DTensor variables
        state, skipped = TrainState(), SkippedRecordsCounter()
    batches = iter(dataset_fn(tf.distribute.InputContext()))
    global_batch = int(batches.element_spec["images"].shape[0])
    manager = checkpoints.make_checkpoint_manager(
        model_dir, state, checkpoint_interval, max_checkpoints, model=task.model,
        optimizer=checkpoints.optimizer_state(optimizer), skipped_records=skipped)
    restored = checkpoints.restore_latest(manager, global_batch)
    state.global_batch_size.assign(global_batch)
    if restored:
        logging.info("resuming from %s at step %d; on a mesh the input position is not "
                     "checkpointed: the input pipeline restarts from its first batch",
                     restored, int(state.step.numpy()))

    @tf.function(autograph=False)
    def train_step(batch):
        # The task's metrics (in-batch accuracies) are not returned, so not computed (see top).
        result, _ = guarded_update(task, optimizer, batch, step_seed(seed, state.step),
                                   clip_norm)
        skipped.update(batch)
        state.record(result, window=1)
        return result, advance_state(state, result.applied)

    logger = progress.ProgressLogger(state.step, train_steps, log_every or steps_per_loop)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
    step, first_loop = int(state.step.numpy()), True
    saved_step = step
    while step < train_steps:
        num_steps = min(steps_per_loop, train_steps - step)
        start = time.perf_counter()
        try:
            with ops.mesh_formulations():  # read when train_step is traced
                output = _run_loop(train_step, batches, mesh, step, num_steps,
                                   max_consecutive_nonfinite)
        except NonFiniteLossError as e:
            raise checkpoints.stop_error(e, manager) from None
        step = int(state.step.numpy())
        output.update(learning_rate=float(pd.to_numpy(optimizer.learning_rate)),
                      examples_per_second=global_batch * num_steps / max(
                          time.perf_counter() - start, 1e-9),
                      nonfinite_steps=int(state.nonfinite_steps.numpy()),
                      skipped_records=int(skipped.total.numpy()), **task.summaries())
        with writer.as_default():
            for name, value in output.items():
                tf.summary.scalar(name, value, step=step)
        writer.flush()
        logger(output)
        if first_loop:
            progress.write_operative_config(model_dir, os.path.join(model_dir, "train"), step)
            first_loop = False
        # Not also after the first loop as orbit does: a sharded save costs a compilation
        # (~40 s of CPU for tiny.gin on 8 CPUs).
        if step // checkpoint_interval > saved_step // checkpoint_interval or step == train_steps:
            manager.save(check_interval=False)
            saved_step = step
    return {"step": step, "progress": logger.lines, "eval": None, "preempted": False,
            "checkpoint": manager.latest_checkpoint}


def _run_loop(train_step, batches, mesh, first_step: int, num_steps: int,
              max_consecutive_nonfinite: int):
    """num_steps steps; -> means of loss and grad_norm over the applied steps. The steps are
    dispatched without waiting and read back once at the end of the loop, like the Trainer:
    NonFiniteLossError (before this loop's checkpoint) after max_consecutive_nonfinite
    non-finite steps in a row."""
    outputs = []
    for _ in range(num_steps):
        host = next(batches)
        outputs.append(train_step({k: pd.shard_batch(host[k], mesh) for k in BATCH_KEYS}))
    sums, applied_steps, worst_run = {"loss": 0.0, "grad_norm": 0.0}, 0, 0
    for result, run in outputs:
        worst_run = max(worst_run, int(pd.to_numpy(run)))
        if bool(pd.to_numpy(result.applied)):
            applied_steps += 1
            for name in sums:
                sums[name] += float(pd.to_numpy(getattr(result, name)))
    if worst_run >= max_consecutive_nonfinite:
        raise nonfinite_error(worst_run, first_step + 1, first_step + num_steps,
                              max_consecutive_nonfinite)
    if not applied_steps:
        return {"loss": float("nan")}
    return {name: total / applied_steps for name, total in sums.items()}
