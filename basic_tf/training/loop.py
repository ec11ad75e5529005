"""`train(model_dir)`: the library entry tools/train.py calls. Builds everything, resumes, runs.

    strategy -> [dtype policy] model (stage a: ImageClassifier, stage b: DualEncoder
    [+ image tower from stage a, locked or not]) -> optimizer (built in scope) -> data iterator
    -> checkpoint manager (restore if model_dir has one) -> orbit Controller(Trainer
    [, ContrastiveEvaluator]) -> train / train_and_evaluate

A model_dir that already holds a checkpoint resumes from it exactly (model, optimizer, step,
counters and the data iterator's position); the stage (a) initialisation is only used for a
fresh model_dir. The step's settings are gin bindings of `train` and travel down as arguments:
`train.num_micro_batches`, `train.loss_kind`, `train.local_loss`, `train.loss_chunk` ->
ContrastiveTask ->
accumulation.compute_contrastive_step; `train.remat` -> the model's RematPolicy. The model and
data hyper-parameters are the config dataclasses' bindings (dual_encoder_config.*, ...).

Faults (README "Reliability"): settings are checked before anything heavy (types, ranges, a
writable model_dir); a resume honours a changed learning rate or schedule and logs the change,
and refuses another global batch size or model shape naming the setting; an unreadable newest
checkpoint falls back to the previous one; checkpoints are written from good states only
(checkpoints.TrainingCheckpointManager) and a stop for skipped steps names the newest verified
one; SIGTERM saves a checkpoint at the step it arrived (preemption.py) and returns
{"preempted": True}.

Several workers (MultiWorkerMirroredStrategy, the same command on every host): only the chief
writes into model_dir; the others save their input positions beside it (workers.py).

`train.mesh='batch:B,model:M'` (tools/train.py --mesh) places the same run on a DTensor mesh
instead of a strategy, with the weights sharded (model parallelism; mesh_placement.py): the same
task, Trainer, evaluator, checkpoint and resume.
"""
import contextlib
import datetime
import os
import time
from typing import Callable, Optional

import gin
import keras
import orbit
import tensorflow as tf
from absl import logging
from tensorflow.experimental import dtensor

from basic_tf.data.distributed import CheckpointableDistributedIterator
from basic_tf.data.pipeline import SkippedRecordsCounter, make_dataset
from basic_tf.losses import LOSS_KINDS
from basic_tf.models import DualEncoder, ImageClassifier
from basic_tf.parallel.remat import RematPolicy
from basic_tf.training import (checkpoints, mesh_placement, precision, preemption, pretrain,
                               progress, settings_diff, workers)
from basic_tf.training.contrastive import ContrastiveTask
from basic_tf.training.evaluator import ContrastiveEvaluator
from basic_tf.training.optimizers import make_optimizer
from basic_tf.training.trainer import (NonFiniteLossError, PreemptedError, Trainer, TrainState)

STAGES = ("contrastive", "pretrain")


def _build_task(stage: str, model_dir: str, init_image_tower_from: Optional[str],
                lock_image_tower: bool, remat: RematPolicy, num_micro_batches: int,
                loss_kind: str, local_loss: bool, loss_chunk: int = 0):
    if stage == "pretrain":
        if init_image_tower_from or lock_image_tower:
            raise ValueError("train.init_image_tower_from / train.lock_image_tower belong to "
                             "stage='contrastive' (stage (b)), not stage='pretrain'")
        return pretrain.PretrainTask(ImageClassifier(remat_policy=remat))
    model = DualEncoder(remat_policy=remat)
    if lock_image_tower and not init_image_tower_from:
        raise ValueError("train.lock_image_tower=True needs train.init_image_tower_from (a stage "
                         "(a) checkpoint): locking a randomly initialised tower trains nothing "
                         "useful")
    if init_image_tower_from and tf.train.latest_checkpoint(model_dir) is None:
        path = pretrain.restore_image_tower(model, init_image_tower_from)
        logging.info("image tower initialised from stage (a) checkpoint %s", path)
    return ContrastiveTask(model, num_micro_batches=num_micro_batches, loss_kind=loss_kind,
                           local_loss=local_loss, loss_chunk=loss_chunk,
                           lock_image_tower=lock_image_tower)


def _global_batch_size(iterator, num_replicas: int) -> int:
    return int(iterator.element_spec["images"].shape[0]) * num_replicas


def _training_mesh(mesh: Optional[str], strategy):
    """The DTensor mesh of train.mesh (None without one)."""
    if not mesh:
        return None
    if strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy():
        raise ValueError(f"train.mesh={mesh!r} replaces the tf.distribute strategy: use the "
                         f"default strategy, not {type(strategy).__name__}")
    return mesh_placement.make_training_mesh(mesh)


def _input(strategy, device_mesh, dataset_fn):
    """The training iterator: per-replica batches under a strategy, sharded global batches on
    a mesh; both checkpointable."""
    if device_mesh is None:
        return CheckpointableDistributedIterator(strategy, dataset_fn)
    return mesh_placement.MeshBatches(device_mesh, dataset_fn(tf.distribute.InputContext()))


def _check_settings(**settings) -> None:
    """ValueError naming `train.<name>` and its value for a wrong type or range, before any
    heavy work (a gin typo such as train_steps='ten' or train_steps=-5)."""
    optional = ("log_every", "eval_interval", "clip_norm", "loss_spike_factor")
    for name, value in settings.items():
        if value is None and name in optional:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in ("clip_norm", "loss_spike_factor"):
            if not number or value <= 0:
                raise ValueError(f"train.{name}={value!r} must be a positive number or None")
        elif name == "seed":
            if not number or not isinstance(value, int):
                raise ValueError(f"train.seed={value!r} must be an integer")
        elif not number or not isinstance(value, int) or value < 1:
            raise ValueError(f"train.{name}={value!r} must be a positive integer")


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


@gin.configurable(denylist=["model_dir", "strategy", "dataset_fn", "eval_dataset_fn"])
def train(model_dir: str,
          strategy: Optional[tf.distribute.Strategy] = None,
          *,
          stage: str = "contrastive",
          train_steps: int = gin.REQUIRED,
          num_micro_batches: int = 1,
          loss_kind: str = "softmax",
          local_loss: bool = False,
          loss_chunk: int = 0,
          remat: str = "none",
          steps_per_loop: int = 100,
          checkpoint_interval: int = 1000,
          max_checkpoints: int = 3,
          log_every: Optional[int] = None,
          clip_norm: Optional[float] = 1.0,
          max_consecutive_nonfinite: int = 5,
          loss_spike_factor: Optional[float] = None,
          loss_spike_window: int = 100,
          seed: int = 0,
          mixed_precision: Optional[str] = None,
          init_image_tower_from: Optional[str] = None,
          lock_image_tower: bool = False,
          eval_interval: Optional[int] = None,
          eval_steps: int = -1,
          eval_fn: Optional[Callable] = None,
          use_tf_while_loop: bool = True,
          mesh: Optional[str] = None,
          dataset_fn: Optional[Callable] = None,
          eval_dataset_fn: Optional[Callable] = None) -> dict:
    """Trains until global step `train_steps`; returns a record of the run: step, progress
    lines, evaluation, preempted, checkpoint, global_batch_size, num_micro_batches.

    Args:
      model_dir: checkpoints (ckpt-<step>), TensorBoard (train/, eval/), operative_config.gin.
      strategy: a tf.distribute strategy (default: the current one).
      stage: "pretrain" (stage (a): image tower + classifier on labelled images) or
        "contrastive" (stage (b)).
      train_steps: the global step to stop at.
      num_micro_batches: BASIC's exact contrastive accumulation: each replica's batch is split
        into this many micro-batches (memory per micro-batch; the loss and gradient stay those
        of the whole batch). Passed to ContrastiveTask -> compute_contrastive_step.
      loss_kind: 'softmax' (CLIP/BASIC InfoNCE) or 'sigmoid' (SigLIP; with
        dual_encoder_config.use_logit_bias = True).
      local_loss: each replica computes only its rows of the loss (O(N^2/R) memory; same
        gradients).
      loss_chunk: C > 0: the loss over blocks of C columns of the global batch, recomputed in
        the backward pass (memory O(N x C) instead of N^2, the same loss and gradients to
        float32 rounding; C must divide the global batch); 0: unchunked. tools/plan.py
        recommends one.
      remat: recomputation of tower blocks: 'none', 'every_block' or 'every_k:K' (every K-th
        block); RematPolicy.parse reads it.
      steps_per_loop: steps per orbit inner loop (one tf.while_loop; summaries per loop).
      checkpoint_interval: checkpoints at exact multiples of this many steps (and at the end).
      max_checkpoints: checkpoints kept (at least 2: the newest verified one is never deleted).
      log_every: steps between progress lines (default steps_per_loop).
      clip_norm: clip the global-batch gradient to this L2 norm (None: no clipping).
      max_consecutive_nonfinite: skipped steps in a row (non-finite loss, gradient or update,
        or a loss spike) that stop the run.
      loss_spike_factor: skip a step whose loss exceeds this x the median loss of the last
        loss_spike_window applied steps (None: no loss-spike guard).
      loss_spike_window: applied steps in that median (1..1024).
      seed: seeds the weight initialisation and is the base of the per-step
        dropout/stochastic-depth seeds.
      mixed_precision: None / "float32" / "mixed_bfloat16".
      init_image_tower_from: stage (a) model_dir or ckpt prefix (stage (b), fresh model_dir).
      lock_image_tower: LiT: keep the initialised image tower fixed (stage (b)).
      eval_interval: steps between evaluations (stage (b)); None: no evaluation.
      eval_steps: validation batches per evaluation (-1: the whole evaluation set).
      eval_fn: `eval_fn(model) -> {name: float}` run at each evaluation (zero-shot hook).
      use_tf_while_loop: orbit runs each loop as one tf.while_loop (TPU); False for debugging.
      mesh: 'batch:B,model:M': train on a DTensor mesh of exactly all local devices, weights
        sharded by basic_tf.parallel.dtensor.layout_rules (mesh_placement.py; with the default
        strategy). None: `strategy`.
      dataset_fn / eval_dataset_fn: InputContext -> per-replica batched dataset; default
        basic_tf.data.pipeline.make_dataset(ctx, training=True / False).
    """
    _check_settings(train_steps=train_steps, steps_per_loop=steps_per_loop,
                    checkpoint_interval=checkpoint_interval, max_checkpoints=max_checkpoints,
                    log_every=log_every, eval_interval=eval_interval, clip_norm=clip_norm,
                    max_consecutive_nonfinite=max_consecutive_nonfinite,
                    loss_spike_factor=loss_spike_factor, loss_spike_window=loss_spike_window,
                    seed=seed, num_micro_batches=num_micro_batches)
    if loss_kind not in LOSS_KINDS:
        raise ValueError(f"train.loss_kind={loss_kind!r} is not one of {LOSS_KINDS}")
    if not isinstance(local_loss, bool):
        raise ValueError(f"train.local_loss={local_loss!r} must be True or False")
    if isinstance(loss_chunk, bool) or not isinstance(loss_chunk, int) or loss_chunk < 0:
        raise ValueError(f"train.loss_chunk={loss_chunk!r} must be an integer >= 0 (0: the "
                         f"unchunked loss)")
    remat_policy = RematPolicy.parse(remat, name="train.remat")
    if stage not in STAGES:
        raise ValueError(f"train.stage={stage!r} is not one of {STAGES}")
    if eval_interval is not None and stage != "contrastive":
        raise ValueError("train.eval_interval is for stage='contrastive'; set it to None")
    contrastive_only = {"num_micro_batches": (num_micro_batches, 1),
                        "loss_kind": (loss_kind, "softmax"), "local_loss": (local_loss, False),
                        "loss_chunk": (loss_chunk, 0)}
    for name, (value, default) in contrastive_only.items():
        if stage != "contrastive" and value != default:  # else silently unused by stage (a)
            raise ValueError(f"train.{name}={value!r} is for stage='contrastive', not "
                             f"stage={stage!r}; remove the binding")
    strategy = strategy or tf.distribute.get_strategy()
    device_mesh = _training_mesh(mesh, strategy)
    check_writable(model_dir)
    role = workers.role_of(strategy)  # several workers: only the chief writes into model_dir
    write_dir = workers.write_dir(model_dir, role)
    if role.is_chief:
        checkpoints.clean_stale_temporaries(model_dir)
    workers.remove_scratch(model_dir, role)
    changes = settings_diff.changed_settings(model_dir)
    dataset_fn = dataset_fn or (lambda ctx: make_dataset(ctx, training=True))

    keras.utils.set_random_seed(seed)  # weight initialisation: a run is a function of its config
    with strategy.scope():
        with precision.dtype_policy(mixed_precision):
            task = _build_task(stage, model_dir, init_image_tower_from, lock_image_tower,
                               remat_policy, num_micro_batches, loss_kind, local_loss,
                               loss_chunk)
    if device_mesh is None:
        with strategy.scope():
            optimizer = make_optimizer(task.trainable_variables)
    else:
        optimizer = mesh_placement.shard_task(task, device_mesh)
    # Counters: mirrored under a strategy, replicated DTensor variables on a mesh.
    with (strategy.scope() if device_mesh is None else dtensor.default_mesh(device_mesh)):
        state = TrainState()
        skipped_records = SkippedRecordsCounter()
    iterator = _input(strategy, device_mesh, dataset_fn)
    global_batch_size = _global_batch_size(iterator, strategy.num_replicas_in_sync)
    if loss_chunk and global_batch_size % loss_chunk:
        raise ValueError(f"train.loss_chunk={loss_chunk} does not divide the global batch of "
                         f"{global_batch_size} pairs; use a divisor of it (tools/plan.py "
                         f"recommends one) or 0")
    if device_mesh is None:  # several workers: only the chief writes into model_dir
        manager = workers.make_checkpoint_manager(
            model_dir, strategy, state, checkpoint_interval, max_checkpoints, model=task.model,
            optimizer=checkpoints.optimizer_state(optimizer), data=iterator,
            skipped_records=skipped_records)
    else:  # the input position beside the DTensor checkpoint (checkpoints.py)
        manager = checkpoints.make_checkpoint_manager(
            model_dir, state, checkpoint_interval, max_checkpoints, model=task.model,
            optimizer=checkpoints.optimizer_state(optimizer), skipped_records=skipped_records,
            host_objects={"data": iterator})
    restored = checkpoints.restore_latest(manager, global_batch_size,
                                          settings_diff.describe(changes))
    state.global_batch_size.assign(global_batch_size)
    if restored:
        logging.info("resuming from %s at step %d", restored, int(state.step.numpy()))
        if changes and role.is_chief:
            kept = settings_diff.keep_previous_config(model_dir, int(state.step.numpy()))
            logging.warning("%s", settings_diff.describe(
                changes, f"resuming with changed settings (honoured; the previous config is "
                f"kept as {kept}): "))

    trainer = Trainer(strategy, task, optimizer, iterator, state,
                      global_batch_size=global_batch_size, clip_norm=clip_norm,
                      max_consecutive_nonfinite=max_consecutive_nonfinite,
                      loss_spike_factor=loss_spike_factor, loss_spike_window=loss_spike_window,
                      seed=seed, skipped_records=skipped_records,
                      use_tf_while_loop=use_tf_while_loop, mesh=device_mesh)
    evaluator = None
    if eval_interval is not None:
        eval_dataset_fn = eval_dataset_fn or (lambda ctx: make_dataset(ctx, training=False))
        eval_data = (strategy.distribute_datasets_from_function(eval_dataset_fn)
                     if device_mesh is None else mesh_placement.MeshDataset(
                         device_mesh, eval_dataset_fn(tf.distribute.InputContext())))
        evaluator = ContrastiveEvaluator(strategy, task.model, task.loss_fn, eval_data, eval_fn,
                                         mesh=device_mesh)
    logger = progress.ProgressLogger(state.step, train_steps, log_every or steps_per_loop)
    progress.quiet_orbit()
    controller = orbit.Controller(
        global_step=state.step, trainer=trainer, evaluator=evaluator, strategy=strategy,
        train_actions=[logger, progress.OperativeConfigWriter(
            write_dir, os.path.join(write_dir, "train"), state.step)],
        steps_per_loop=_loop_lengths(steps_per_loop, checkpoint_interval),
        checkpoint_manager=manager, summary_dir=os.path.join(write_dir, "train"),
        eval_summary_dir=os.path.join(write_dir, "eval"))
    output, preempted, start = None, False, time.time()
    try:
        # Several workers: SIGTERM ends the process, as SIGKILL does (one worker stopping early
        # alone would wait forever in its save's collectives while the others step).
        with (preemption.SigtermWatcher(trainer.stop_requested) if role.num_workers == 1
              else contextlib.nullcontext()):
            if evaluator is not None:
                output = controller.train_and_evaluate(
                    train_steps=train_steps, eval_steps=eval_steps, eval_interval=eval_interval)
            else:
                controller.train(steps=train_steps)
    except NonFiniteLossError as e:
        raise checkpoints.stop_error(e, manager) from None
    except PreemptedError as e:
        path = manager.save(check_interval=False) or manager.latest_checkpoint
        logging.warning("%s; checkpoint %s. Rerun the same command to resume.", e, path)
        preempted = True
    workers.remove_scratch(model_dir, role)
    step = int(state.step.numpy())
    logging.info("training %s at step %d/%d after %s; %d step(s) skipped in all; latest "
                 "checkpoint %s", "preempted" if preempted else "finished", step, train_steps,
                 datetime.timedelta(seconds=round(time.time() - start)),
                 int(state.nonfinite_steps.numpy()), manager.latest_checkpoint)
    return {"step": step, "progress": logger.lines, "eval": output, "preempted": preempted,
            "checkpoint": manager.latest_checkpoint, "global_batch_size": global_batch_size,
            "num_micro_batches": num_micro_batches}
