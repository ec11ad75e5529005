"""`train(model_dir, config, placement, ...)`: builds everything, resumes, runs.

tools/train.py (and the demo) reach it through basic_tf/from_gin.py, which builds its arguments
from the gin bindings: config (TrainConfig, `train.*`), placement (Placement: the strategy or
the `train.mesh` DTensor mesh), models (ModelConfigs), the data pipelines (make_dataset).

    placement -> [dtype policy] model (stage a: ImageClassifier, stage b: DualEncoder
    [+ image tower from stage a, locked or not]) -> optimizer (built in scope) -> data iterator
    -> checkpoint manager (restore if model_dir has one) -> orbit Controller(Trainer
    [, ContrastiveEvaluator]) -> train / train_and_evaluate

A model_dir that already holds a checkpoint resumes from it exactly (model, optimizer, step,
counters and the data iterator's position); the stage (a) initialisation is only used for a
fresh model_dir. The step's settings are TrainConfig fields and travel down as arguments:
num_micro_batches, loss_kind, local_loss, loss_chunk -> ContrastiveTask ->
accumulation.compute_contrastive_step; remat -> the model's RematPolicy.

Faults (README "Reliability"): settings are checked before anything heavy (TrainConfig's
__post_init__, a writable model_dir, a mesh run's model_dir resumed without the mesh); one
training per model_dir (run_lock.py: the chief holds model_dir/training.lock); a resume honours
a changed learning rate or schedule and logs the change, and refuses another global batch size,
model shape or tokenizer naming the setting; an unreadable newest
checkpoint falls back to the previous one; checkpoints are written from good states only
(checkpoints.TrainingCheckpointManager) and a stop for skipped steps names the newest verified
one; SIGTERM or SIGINT (Ctrl-C) saves a checkpoint at the step it arrived (preemption.py) and
returns {"preempted": True, "stop_signal": its name}.

Several workers (MultiWorkerMirroredStrategy, the same command on every host): only the chief
writes into model_dir; the others save their input positions beside it (workers.py).

`train.mesh='batch:B,model:M'` (tools/train.py --mesh) places the same run on a DTensor mesh
instead of a strategy, with the weights sharded (model parallelism; placement.py): the same
task, Trainer, evaluator, checkpoint and resume.
"""
import contextlib
import datetime
import os
import time
from typing import Callable, Optional

import keras
import orbit
import tensorflow as tf
from absl import logging

from basic_tf.data import tokenizer_record
from basic_tf.data.pipeline import SkippedRecordsCounter
from basic_tf.models import ModelConfigs
from basic_tf.training import (checkpoints, precision, preemption, pretrain, progress,
                               run_lock, settings_diff, workers)
from basic_tf.training.contrastive import ContrastiveTask
from basic_tf.training.evaluator import ContrastiveEvaluator
from basic_tf.training.placement import Placement
from basic_tf.training.train_config import TrainConfig
from basic_tf.training.step import TrainState
from basic_tf.training.trainer import SkippedStepsError, PreemptedError, Trainer


def train(model_dir: str, config: TrainConfig, placement: Placement, *, models: ModelConfigs,
          dataset_fn: Callable, eval_dataset_fn: Optional[Callable] = None,
          eval_fn: Optional[Callable] = None,
          config_text: Optional[progress.ConfigText] = None,
          tokenizer: Optional[dict] = None) -> dict:
    """Trains until global step config.train_steps; returns a record of the run: step,
    progress lines, evaluation, preempted, stop_signal ('SIGTERM', 'SIGINT' or None),
    checkpoint, global_batch_size, num_micro_batches.

    model_dir: checkpoints (ckpt-<step>), TensorBoard (train/, eval/), operative_config.gin.
    dataset_fn / eval_dataset_fn: InputContext -> per-replica batched dataset (training /
      evaluation; the latter only with config.eval_interval).
    eval_fn: `eval_fn(model) -> {name: float}` run at each evaluation (zero-shot hook).
    config_text: the configuration's text (from_gin: gin's), compared on resume and written as
      model_dir/operative_config.gin; None: neither.
    tokenizer: the fingerprint of the training tokenizer (data/tokenizer_record.py), recorded as
      model_dir/tokenizer.json for evaluate and export to check; a resume with another one is
      refused.
    """
    config.check_trainable()
    check_writable(model_dir)
    placement.check_resume(model_dir)
    role = placement.role  # several workers: only the chief writes into model_dir
    # One run per model_dir: the chief holds the lock for the whole run (run_lock.py).
    with run_lock.ModelDirLock(model_dir) if role.is_chief else contextlib.nullcontext():
        return _train(model_dir, config, placement, models, dataset_fn, eval_dataset_fn, eval_fn,
                      config_text, tokenizer)


def _train(model_dir: str, config: TrainConfig, placement: Placement, models: ModelConfigs,
           dataset_fn: Callable, eval_dataset_fn: Optional[Callable],
           eval_fn: Optional[Callable], config_text: Optional[progress.ConfigText],
           tokenizer: Optional[dict]) -> dict:
    """train's run once model_dir is checked (and locked, by the chief)."""
    role = placement.role
    if role.is_chief:
        checkpoints.clean_stale_temporaries(model_dir)
    workers.remove_scratch(model_dir, role)
    if tokenizer is not None:
        tokenizer_record.record(model_dir, tokenizer, write=role.is_chief)
    changes = (settings_diff.changed_settings(model_dir, config_text.given)
               if config_text else [])

    keras.utils.set_random_seed(config.seed)  # weight initialisation: a function of the config
    with placement.model_scope(), precision.dtype_policy(config.mixed_precision):
        task = _build_task(config, models, model_dir)
    optimizer = placement.place_task(task)
    with placement.counters_scope():
        state = TrainState()
        skipped_records = SkippedRecordsCounter()
    iterator = placement.input(dataset_fn)
    global_batch_size = (int(iterator.element_spec["images"].shape[0])
                         * placement.num_replicas)
    if config.loss_chunk and global_batch_size % config.loss_chunk:
        raise ValueError(f"train.loss_chunk={config.loss_chunk} does not divide the global batch "
                         f"of {global_batch_size} pairs; use a divisor of it (tools/plan.py "
                         f"recommends one) or 0")
    manager = placement.checkpoint_manager(
        model_dir, state, config.checkpoint_interval, config.max_checkpoints, model=task.model,
        optimizer=optimizer, data=iterator, skipped_records=skipped_records)
    _resume(manager, state, global_batch_size, changes, model_dir, role.is_chief,
            iterator.num_pipelines)

    trainer = Trainer(placement, task, optimizer, iterator, state,
                      global_batch_size=global_batch_size, clip_norm=config.clip_norm,
                      max_consecutive_nonfinite=config.max_consecutive_nonfinite,
                      loss_spike_factor=config.loss_spike_factor,
                      loss_spike_window=config.loss_spike_window, seed=config.seed,
                      skipped_records=skipped_records,
                      use_tf_while_loop=config.use_tf_while_loop,
                      jit_compile=config.jit_compile)
    evaluator = None
    if config.eval_interval is not None:
        evaluator = ContrastiveEvaluator(placement, task.model, task.loss_fn,
                                         placement.eval_input(eval_dataset_fn), eval_fn)
    write_dir = workers.write_dir(model_dir, role)
    logger = progress.ProgressLogger(state.step, config.train_steps,
                                     config.log_every or config.steps_per_loop)
    progress.quiet_orbit()
    actions = [logger]
    if config_text:
        actions.append(progress.OperativeConfigWriter(
            write_dir, os.path.join(write_dir, "train"), state.step, config_text.operative))
    actions.append(lambda output: manager.save())  # at multiples of checkpoint_interval
    controller = orbit.Controller(
        global_step=state.step, trainer=trainer, evaluator=evaluator,
        strategy=placement.strategy, train_actions=actions,
        steps_per_loop=_loop_lengths(config.steps_per_loop, config.checkpoint_interval),
        summary_dir=os.path.join(write_dir, "train"),
        eval_summary_dir=os.path.join(write_dir, "eval"))
    output, stopped_by, start = _run(controller, trainer, manager, config, role.num_workers)
    workers.remove_scratch(model_dir, role)
    step = int(state.step.numpy())
    logging.info("training %s at step %d/%d after %s; %d step(s) skipped in all; latest "
                 "checkpoint %s", f"stopped by {stopped_by}" if stopped_by else "finished", step,
                 config.train_steps, datetime.timedelta(seconds=round(time.time() - start)),
                 int(state.skipped_steps.numpy()), manager.latest_checkpoint)
    return {"step": step, "progress": logger.lines, "eval": output,
            "preempted": stopped_by is not None, "stop_signal": stopped_by,
            "checkpoint": manager.latest_checkpoint, "global_batch_size": global_batch_size,
            "num_micro_batches": config.num_micro_batches}


def _build_task(config: TrainConfig, models: ModelConfigs, model_dir: str):
    """Stage (a)'s PretrainTask or stage (b)'s ContrastiveTask, its model built with
    config.remat (and, on a fresh model_dir, the image tower from config.init_image_tower_from)."""
    if config.stage == "pretrain":
        return pretrain.PretrainTask(models.image_classifier(config.remat_policy))
    model = models.dual_encoder(config.remat_policy)
    if config.init_image_tower_from and tf.train.latest_checkpoint(model_dir) is None:
        path = pretrain.restore_image_tower(model, config.init_image_tower_from,
                                            config.allow_unverified)
        logging.info("image tower initialised from stage (a) checkpoint %s", path)
    return ContrastiveTask(model, num_micro_batches=config.num_micro_batches,
                           loss_kind=config.loss_kind, local_loss=config.local_loss,
                           loss_chunk=config.loss_chunk, lock_image_tower=config.lock_image_tower)


def _resume(manager, state: TrainState, global_batch_size: int, changes, model_dir: str,
            is_chief: bool, input_pipelines: int) -> None:
    """Restores model_dir's newest readable checkpoint, if any (checkpoints.restore_latest
    refuses another batch size, number of input pipelines or model shape), and logs the
    settings that changed."""
    restored = checkpoints.restore_latest(manager, global_batch_size,
                                          settings_diff.describe(changes), input_pipelines)
    state.global_batch_size.assign(global_batch_size)
    if restored:
        logging.info("resuming from %s at step %d", restored, int(state.step.numpy()))
        if changes and is_chief:
            kept = settings_diff.keep_previous_config(model_dir, int(state.step.numpy()))
            logging.warning("%s", settings_diff.describe(
                changes, f"resuming with changed settings (honoured; the previous config is "
                f"kept as {kept}): "))


def _run(controller, trainer: Trainer, manager, config: TrainConfig, num_workers: int) -> tuple:
    """Runs the controller to config.train_steps -> (evaluation output, the stop signal's name
    or None, start time). Too many skipped steps raise SkippedStepsError naming the newest good
    checkpoint; SIGTERM or SIGINT saves a checkpoint at the step it arrived."""
    output, stopped_by, start = None, None, time.time()
    # Several workers: SIGTERM ends the process, as SIGKILL does (one worker stopping early
    # alone would wait forever in its save's collectives while the others step).
    watcher = (preemption.StopSignalWatcher(trainer.stop_requested) if num_workers == 1
               else contextlib.nullcontext())
    try:
        with watcher:
            if config.eval_interval is not None:
                output = controller.train_and_evaluate(
                    train_steps=config.train_steps, eval_steps=config.eval_steps,
                    eval_interval=config.eval_interval)
            else:
                controller.train(steps=config.train_steps)
            manager.save(check_interval=False)  # the end (a saved step is not written again)
    except SkippedStepsError as e:
        raise checkpoints.stop_error(e, manager) from None
    except PreemptedError as e:
        path = manager.save(check_interval=False) or manager.latest_checkpoint
        stopped_by = getattr(watcher, "received", None) or "SIGTERM"
        logging.warning("%s received: %s; checkpoint %s. Rerun the same command to resume.",
                        stopped_by, e, path)
    return output, stopped_by, start


def check_writable(model_dir: str) -> None:
    """ValueError naming model_dir when it cannot be created or written (read-only, full, not
    a directory): found in a second, not at the first checkpoint after minutes of tracing."""
    probe = os.path.join(model_dir, f".write_probe-{os.getpid()}")  # workers share model_dir
    try:
        tf.io.gfile.makedirs(model_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        first = str(getattr(e, "message", e)).strip().splitlines()[0]
        raise ValueError(f"--model_dir={model_dir} is not writable: {first}") from None


def _loop_lengths(steps_per_loop: int, checkpoint_interval: int) -> Callable[[int], int]:
    """orbit steps_per_loop callable: each loop ends at the next multiple of steps_per_loop or
    of checkpoint_interval, so checkpoints land at exact multiples (also after a resume from a
    preemption checkpoint at an odd step)."""
    def length(step: int) -> int:
        return min(steps_per_loop - step % steps_per_loop,
                   checkpoint_interval - step % checkpoint_interval)
    return length
