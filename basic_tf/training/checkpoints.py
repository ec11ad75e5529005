"""Training checkpoints: everything a resumed run needs to continue exactly, never a bad state.

Keys of the checkpoint (other tools read them): model (the keras.Model: DualEncoder or stage (a)
ImageClassifier), optimizer (`optimizer_state`: update count and slots, not the learning rate,
which comes from the config), state (step.TrainState: global step, skipped-step counters,
verified step, global batch size, recent losses; TrainState.checkpointed), data (the input iterator's position, shuffle
buffers included), skipped_records (data pipeline counters).

Host parts: an input position that cannot be in the checkpoint is written beside it, first, as
<host_dir>/ckpt-<step> (`host_checkpoint`): on a DTensor mesh (model_dir/host/: TF saves DTensor
variables with a DTensor program, which refuses the host iterator's state) and for each
non-chief worker (workers.py: its own position, model_dir/input_position/<task>/). A checkpoint
whose `checkpoint` index entry exists has its host parts; rotated-away ones are deleted.

Atomic: tf.train.CheckpointManager writes ckpt-N.index/.data (TF writes the shards to a temporary
prefix and merges them into place) and only then rewrites the `checkpoint` index file (an atomic
rename), which is what `latest_checkpoint` reads. A kill during a save leaves the previous
checkpoint as the latest (tests/training/test_resume_kill.py).

By composition: TrainingCheckpointManager holds a tf.train.CheckpointManager and uses its public
API only (save(checkpoint_number=...), checkpoints, latest_checkpoint); the policy below is its
own. Where it must name other checkpoints in the index (settle, a fallback), it rewrites the
`checkpoint` file (`write_index`) and opens a new CheckpointManager, which reads it back.
orbit's Controller is given no checkpoint manager (it asserts a tf.train.CheckpointManager):
loop.py saves through a train action and once at the end.

Good states only (TrainingCheckpointManager):
  - a checkpoint is written only when the last step was applied (no skipped step pending), at
    exact multiples of checkpoint_interval, at the end and on preemption;
  - a checkpoint at step s is *verified* once a later step computed a finite loss and gradient
    from its weights (TrainState.verified_step >= s). At most the newest checkpoint is
    unverified, so keeping at least two never rotates away the newest verified one;
  - when a run stops for skipped steps, `settle` moves unverified checkpoints into
    model_dir/unverified/ and points the index back at the newest verified one, which the error
    names: rerunning (e.g. with a lower learning rate) resumes from it.

Reading back (tools/evaluate.py, tools/export.py, the demo, stage (b)'s image tower):
`checkpoint_path` is the one reading of "a model_dir or a ckpt-N prefix" (a prefix that is no
verified state of its run, under unverified/ or past its index's newest, is refused unless
allowed: only verified states leave a run), `restore_model` loads the `model` key into a model
and refuses a partial, mismatched or diverged one
(basic_tf/from_gin.py's `load_trained_model` builds the gin config's DualEncoder with its input
view and tokenizer around it).
"""
import os
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import text_format

from basic_tf.data import distributed
from basic_tf.training.trainer import SkippedStepsError

UNVERIFIED_DIR = "unverified"
HOST_DIR = "host"  # host-side objects saved beside a DTensor checkpoint (the input position)


class ResumeRefused(ValueError):
    """model_dir's checkpoint was trained with a setting this run changed (global batch size)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, read-only or vanished model_dir)."""


def optimizer_state(optimizer) -> tf.train.Checkpoint:
    """What a checkpoint keeps of a Keras 3 optimizer: its update count and its slots.

    Checkpointing the optimizer object itself would also save the model's variables through its
    `_trainable_variables` list, and, that path being the shorter one, under optimizer/... keys
    instead of model/... (tools reading model/ keys, e.g. zero-shot restore, would miss them).
    The learning-rate variable is left out: a learning rate changed on resume is honoured. The
    slots are restored by position, which the optimizer's build order fixes.
    """
    learning_rate = getattr(optimizer, "_learning_rate", None)
    return tf.train.Checkpoint(
        iterations=optimizer.iterations,
        variables=[v for v in optimizer.variables
                   if v is not optimizer.iterations and v is not learning_rate])


def step_of(path: str) -> int:
    """N of .../ckpt-N."""
    return int(path.rsplit("-", 1)[1])


def remove_tree(path: str) -> None:
    """rm -r that also works on gs:// (tf.io.gfile); nothing there is fine."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def write_index(model_dir: str, paths: list) -> None:
    """Rewrites model_dir's `checkpoint` index file to list `paths` (oldest first; the last is
    the latest), each with the save time the index recorded for it; with none, removes it.

    The save times matter: tf.train.CheckpointManager treats an entry not newer than the
    index's last_preserved_timestamp as kept-forever and leaves it out of `checkpoints` (a
    resume would then start afresh). Written to a temporary file and renamed, as TF does.
    """
    index = os.path.join(model_dir, "checkpoint")
    if not paths:
        if tf.io.gfile.exists(index):
            tf.io.gfile.remove(index)
        return
    old = tf.train.get_checkpoint_state(model_dir)
    times = ({os.path.basename(p): t for p, t in zip(old.all_model_checkpoint_paths,
                                                     old.all_model_checkpoint_timestamps)}
             if old else {})
    names = [os.path.basename(p) for p in paths]
    # Entries relative to model_dir, as TF writes them (the proto builder makes a path under a
    # relative model_dir relative to it, and keeps one given under an absolute model_dir).
    entries = [n if os.path.isabs(model_dir) else os.path.join(model_dir, n) for n in names]
    proto = tf.compat.v1.train.generate_checkpoint_state_proto(
        model_dir, entries[-1], all_model_checkpoint_paths=entries,
        all_model_checkpoint_timestamps=[times.get(n, time.time()) for n in names],
        last_preserved_timestamp=old.last_preserved_timestamp if old else time.time() - 1)
    temporary = f"{index}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as f:
        f.write(text_format.MessageToString(proto))
    tf.io.gfile.rename(temporary, index, overwrite=True)


class TrainingCheckpointManager:
    """Writes good states only (see the module docstring) through the tf.train.CheckpointManager
    it holds, using its public API alone (save, checkpoints, latest_checkpoint).

    Args:
      checkpoint: the tf.train.Checkpoint of everything trained.
      model_dir: the run's directory: ckpt-<step> and the `checkpoint` index.
      state: step.TrainState (step, consecutive_skipped, verified_step).
      checkpoint_interval: save at exact multiples of this many steps.
      max_to_keep: checkpoints kept (at least 2, so the newest verified one is always there).
      host_checkpoint: a tf.train.Checkpoint of host-side objects (an input iterator) written
        as host_dir/ckpt-<step> before each checkpoint (None: none).
      host_dir: where; default model_dir/host.
      write_dir: where this process writes its checkpoint. model_dir (the default): it keeps
        model_dir's index. Elsewhere (workers.py: a worker that is not the chief, `worker` its
        task name): a scratch copy, written for the save's collectives and deleted after it; the
        run's checkpoints are the ones model_dir's index (the chief's) lists, and the host part
        (this worker's input position) is required to restore one.
      before_write: called between the host part and the checkpoint (workers.py: a barrier, so
        that every worker's host part of the step is on disk before the index names it).
    """

    def __init__(self, checkpoint, model_dir: str, state, checkpoint_interval: int,
                 max_to_keep: int = 3, host_checkpoint: Optional[tf.train.Checkpoint] = None,
                 host_dir: Optional[str] = None, *, write_dir: Optional[str] = None,
                 worker: str = "", before_write: Optional[Callable[[], None]] = None):
        self.checkpoint, self.model_dir, self.state = checkpoint, model_dir, state
        self.checkpoint_interval, self.max_to_keep = checkpoint_interval, max(max_to_keep, 2)
        self.host_checkpoint = host_checkpoint
        self.host_dir = host_dir or os.path.join(model_dir, HOST_DIR)
        self.write_dir, self.worker, self.before_write = write_dir or model_dir, worker, before_write
        self.keeps_index = self.write_dir == model_dir
        self._written_step = None  # the end of a run saves its last step again: written once
        self._manager = self._open()

    def _open(self) -> tf.train.CheckpointManager:
        """The manager of write_dir, which reads the `checkpoint` index there (its state)."""
        return tf.train.CheckpointManager(self.checkpoint, self.write_dir, self.max_to_keep)

    @property
    def checkpoints(self) -> list:
        """The run's checkpoint paths, oldest first, as model_dir's index lists them."""
        if self.keeps_index:
            return self._manager.checkpoints
        index = tf.train.get_checkpoint_state(self.model_dir)
        return list(index.all_model_checkpoint_paths) if index else []

    @property
    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint of the run (another worker: the one it wrote last)."""
        if self.keeps_index:
            return self._manager.latest_checkpoint
        if self._written_step is not None:
            return os.path.join(self.model_dir, f"ckpt-{self._written_step}")
        listed = self.checkpoints
        return listed[-1] if listed else None

    def host_path(self, path: str) -> str:
        """host_dir/ckpt-N of checkpoint .../ckpt-N."""
        return os.path.join(self.host_dir, os.path.basename(path))

    def save(self, check_interval: bool = True) -> Optional[str]:
        """Saves at the current step if it is a multiple of the interval (or always, with
        check_interval=False), the last step was applied and the step is not written yet;
        -> its path or None."""
        step = int(self.state.step.numpy())
        if (check_interval and step % self.checkpoint_interval) or step == self._written_step:
            return None
        pending = int(self.state.consecutive_skipped.numpy())
        if pending:
            logging.warning("no checkpoint at step %d: its last %d step(s) were skipped; the "
                            "newest checkpoint stays %s", step, pending, self.latest_checkpoint)
            return None
        try:
            path = self._write(step)
        except (tf.errors.OpError, OSError) as e:
            _remove_temporaries(self.write_dir)
            first = str(getattr(e, "message", e)).strip().splitlines()[0]
            raise CheckpointWriteError(
                f"model_dir {self.model_dir}: could not write the checkpoint of step {step} "
                f"({type(e).__name__}: {first}); the previous checkpoint "
                f"{self.latest_checkpoint} is intact. Free space or fix the directory, then "
                "rerun the same command to resume from it.") from None
        logging.info("saved checkpoint %s", path)
        self._prune_host()
        return path

    def _write(self, step: int) -> str:
        """Writes the host part of step `step`, then ckpt-<step> and the index (which commits
        both); -> the run's path of it."""
        if self.host_checkpoint is not None:
            self.host_checkpoint.write(self.host_path(f"ckpt-{step}"))
        if self.before_write is not None:
            self.before_write()
        path = self._manager.save(checkpoint_number=step)
        self._written_step = step
        if self.keeps_index:
            return path
        remove_tree(self.write_dir)  # written for its collectives only
        return self.latest_checkpoint

    def restore_from(self, path: str) -> None:
        """Restores everything checkpointed from `path` (AssertionError if objects are missing
        from it), then its host part: one that is missing leaves the host objects as they are,
        logged (another worker: an error naming it)."""
        self.checkpoint.restore(path).assert_existing_objects_matched()
        if self.host_checkpoint is None:
            return
        host = self.host_path(path)
        if tf.io.gfile.exists(host + ".index"):
            self.host_checkpoint.read(host).assert_existing_objects_matched()
            if self.worker:
                logging.info("%s: input position restored from %s", self.worker, host)
        elif self.worker:
            raise ValueError(
                f"{host}.index is missing: {self.worker}'s input position at the step of "
                f"{path}. Was model_dir trained with another TF_CONFIG (number of workers)? "
                "Resume with the cluster that wrote it, or use a new --model_dir.")
        else:
            logging.warning("checkpoint %s has no %s: the input pipeline restarts from its "
                            "first batch", path, host)

    def _prune_host(self) -> None:
        """Deletes host parts whose checkpoint the index no longer lists (another worker: those
        older than the oldest listed, as the chief may not have listed the step just written)."""
        listed = self.checkpoints
        if self.host_checkpoint is None or not (listed or self.keeps_index):
            return
        names = {os.path.basename(p) for p in listed}
        oldest = min(step_of(p) for p in listed) if listed else 0
        for f in tf.io.gfile.glob(os.path.join(self.host_dir, "ckpt-*")):
            name = os.path.basename(f).split(".")[0]
            stale = name not in names if self.keeps_index else step_of(name) < oldest
            if stale:
                tf.io.gfile.remove(f)

    def newest_verified(self) -> Optional[str]:
        """The newest checkpoint whose weights gave a finite loss (None if there is none)."""
        verified = int(self.state.verified_step.numpy())
        good = [p for p in self.checkpoints if step_of(p) <= verified]
        return good[-1] if good else None

    def settle(self) -> Optional[str]:
        """After a stop for skipped steps: moves checkpoints newer than the newest verified one
        to model_dir/unverified/ and makes that one the latest; -> its path (or None). Another
        worker moves nothing (the index is the chief's)."""
        good = self.newest_verified()
        if not self.keeps_index:
            return good
        keep = [p for p in self.checkpoints if good is not None and step_of(p) <= step_of(good)]
        for path in self.checkpoints:
            if path not in keep:
                target = os.path.join(self.model_dir, UNVERIFIED_DIR)
                tf.io.gfile.makedirs(target)
                for f in tf.io.gfile.glob(path + ".*"):
                    tf.io.gfile.rename(f, os.path.join(target, os.path.basename(f)),
                                       overwrite=True)
                logging.warning("moved unverified checkpoint %s to %s", path, target)
        self.keep_only(keep)
        return good

    def keep_only(self, paths: list) -> None:
        """Makes the index list `paths` (oldest first), the last one the latest; with none,
        removes it so that the next run starts afresh. Another worker leaves it to the chief."""
        if not self.keeps_index:
            return
        write_index(self.model_dir, paths)
        self._manager = self._open()  # its list and latest, read back from the index
        self._prune_host()


def stop_error(error: Exception, manager: TrainingCheckpointManager) -> SkippedStepsError:
    """The SkippedStepsError a run stops with: `error`'s text, then the newest good checkpoint
    (after `manager.settle()` made it the latest) and how to go on from it."""
    good = manager.settle()
    where = (f" (newer, unverified ones were moved to "
             f"{os.path.join(manager.model_dir, UNVERIFIED_DIR)})" if good else
             " (none: no checkpoint had been verified; a rerun starts afresh)")
    return SkippedStepsError(
        f"{error} The newest good checkpoint is {good}{where}. Lower "
        "make_optimizer.learning_rate or train.clip_norm, or check the data, then rerun the "
        "same command to resume from it.")


def training_checkpoint(state, **objects) -> tf.train.Checkpoint:
    """The tf.train.Checkpoint of a run: `objects` (keyword = key) and step.TrainState `state`
    under "state" with the keys of checkpoints already written (TrainState.checkpointed)."""
    return tf.train.Checkpoint(state=state.checkpointed, **objects)


def make_checkpoint_manager(model_dir: str, state, checkpoint_interval: int,
                            max_to_keep: int = 3, host_objects: Optional[dict] = None,
                            **objects) -> TrainingCheckpointManager:
    """A manager saving `objects` (keyword = checkpoint key) and `state` (key "state") to
    model_dir as ckpt-<step>, and `host_objects` beside them (model_dir/host/ckpt-<step>; on a
    DTensor mesh: the input iterator); see TrainingCheckpointManager."""
    checkpoint = training_checkpoint(state, **objects)
    host = tf.train.Checkpoint(**host_objects) if host_objects else None
    return TrainingCheckpointManager(checkpoint, model_dir, state, checkpoint_interval,
                                     max_to_keep, host)


def _remove_temporaries(model_dir: str) -> list:
    """Deletes the temporary shard folders (ckpt-N_temp/) an interrupted save leaves behind."""
    stale = [p for p in tf.io.gfile.glob(os.path.join(model_dir, "*_temp"))
             if tf.io.gfile.isdir(p)]
    for path in stale:
        try:
            tf.io.gfile.rmtree(path)
        except tf.errors.OpError:   # gone already (another worker), or not ours to remove
            pass
    return stale


def clean_stale_temporaries(model_dir: str) -> None:
    """Start-of-run cleanup of what interrupted saves left (logged)."""
    for path in _remove_temporaries(model_dir):
        logging.info("removed %s, left by an interrupted checkpoint save", path)


def check_resumable(reader, path: str, global_batch_size: int,
                    changed_settings: str = "", input_pipelines: int = 1) -> None:
    """Refuses (ValueError naming the setting) a checkpoint (`reader`: its
    `reader`) trained with another global batch size, or whose input position is of another
    number of input pipelines (hosts of a TPU slice) than this run's `input_pipelines`, before
    anything is restored or traced."""
    saved = distributed.saved_pipelines(reader.get_variable_to_shape_map())
    if saved and saved != input_pipelines:
        raise ResumeRefused(
            f"checkpoint {path}'s input position is of {saved} input pipelines (hosts), this run "
            f"has {input_pipelines}: resume on a slice of {saved} hosts, or use a new "
            "--model_dir" + changed_settings)
    key = "state/global_batch_size/.ATTRIBUTES/VARIABLE_VALUE"
    if reader.has_tensor(key):
        before = int(reader.get_tensor(key))
        if before and before != global_batch_size:
            raise ResumeRefused(
                f"make_dataset.global_batch_size={global_batch_size}, but model_dir's checkpoint "
                f"{path} was trained with {before}: the data position and schedule cannot carry "
                f"over. Use the batch size {before} to resume, or a new --model_dir."
                + changed_settings)


def restore_latest(manager: TrainingCheckpointManager, global_batch_size: int,
                   changed_settings: str = "", input_pipelines: int = 1) -> Optional[str]:
    """Restores the newest readable checkpoint of the manager's directory (None if there is
    none). An unreadable one (truncated, corrupt) is reported by file and the previous one is
    used. A checkpoint of another config (missing objects, other shapes, other batch size) is an
    error naming it; `changed_settings` (config diff text) is appended to that error."""
    candidates = list(reversed(manager.checkpoints))
    for i, path in enumerate(candidates):
        try:
            check_resumable(reader(path), path, global_batch_size,
                            changed_settings, input_pipelines)
            manager.restore_from(path)
        except ResumeRefused:
            raise
        except AssertionError as e:
            raise ValueError(
                f"checkpoint {path!r} does not match this run: some model/optimizer/state/data "
                f"objects are missing from it. Is model_dir holding a run of another gin "
                f"config? Use a new --model_dir or the original config. ({e})"
                + changed_settings) from None
        except ValueError as e:
            if "shape" not in str(e):
                raise
            raise ValueError(f"checkpoint {path!r} does not fit this model: "
                             f"{str(e).splitlines()[0]}" + changed_settings) from None
        except (tf.errors.OpError, IndexError) as e:
            first = str(getattr(e, "message", e)).strip().splitlines()[0]
            logging.error("checkpoint %s is unreadable (%s: %s); %s", path, type(e).__name__,
                          first, f"trying {candidates[i + 1]}" if i + 1 < len(candidates)
                          else "no older checkpoint")
            continue
        if i:  # the unreadable newer ones leave the index (their files stay for inspection)
            manager.keep_only(list(reversed(candidates[i:])))
        return path
    if candidates:
        raise ValueError(f"model_dir {manager.model_dir}: none of its checkpoints "
                         f"{candidates} is readable; move them away to start afresh")
    return None


def checkpoint_path(checkpoint: str, source: str, allow_unverified: bool = False) -> str:
    """The tf.train.Checkpoint prefix `checkpoint` names: a prefix (<model_dir>/ckpt-1000) as it
    is, a directory (a training model_dir) as its latest checkpoint.

    `source` is where the value came from, a flag ('--checkpoint') or a binding
    ('train.init_image_tower_from'): a value naming no checkpoint is a FileNotFoundError that
    starts with `source=value`. A prefix that is no verified state of its run
    (`unverified_reason`) is a ValueError that starts the same way, unless `allow_unverified`.
    """
    if tf.io.gfile.isdir(checkpoint):
        path = tf.train.latest_checkpoint(checkpoint)
        if path is None:
            raise FileNotFoundError(
                f"{source}={checkpoint!r} is a directory without a checkpoint (no 'checkpoint' "
                "index file, which tools/train.py writes); give a training model_dir or a "
                "ckpt-N prefix")
        return path
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise FileNotFoundError(f"{source}={checkpoint!r}: no checkpoint there (no "
                                f"{checkpoint}.index); give a training model_dir or a prefix "
                                "such as <model_dir>/ckpt-1000")
    reason = None if allow_unverified else unverified_reason(checkpoint)
    if reason:
        raise ValueError(f"{source}={checkpoint!r} is not a verified checkpoint: {reason}. Give "
                         "its run's model_dir (its newest verified checkpoint), or "
                         "--allow_unverified to load it anyway")
    return checkpoint


def unverified_reason(prefix: str) -> Optional[str]:
    """Why checkpoint `prefix` is no verified state of its run, or None: it lies in a run's
    unverified/ folder, or its step is past the newest checkpoint its folder's index lists (set
    aside as unverified and copied back, or left out after an unreadable save). A prefix in a
    folder without an index, or not named <name>-<step>, cannot be judged: None."""
    folder, name = os.path.split(prefix)
    if os.path.basename(folder) == UNVERIFIED_DIR:
        return (f"it is in {folder}, where its run set it aside when it stopped for skipped "
                "steps (its weights never gave a finite loss)")
    latest = tf.train.latest_checkpoint(folder or ".")
    steps = [n.rsplit("-", 1)[-1] for n in (name, os.path.basename(latest or ""))]
    if latest and all(s.isdigit() for s in steps) and int(steps[0]) > int(steps[1]):
        return (f"its step {steps[0]} is past {latest}, the newest checkpoint its run's index "
                "lists (a checkpoint set aside as unverified and copied back, or one the run "
                "dropped as unreadable)")
    return None


def reader(prefix: str):
    """The CheckpointReader of checkpoint `prefix` (.../ckpt-N). Not tf.train.load_checkpoint,
    which first asks whether the prefix is a folder: ram:// (the tests' stand-in for a bucket)
    says yes when ckpt-N.index is there, and the checkpoint is then "not found"."""
    return tf.compat.v1.train.NewCheckpointReader(prefix)


def restore_model(model, checkpoint: str, source: str = "--checkpoint",
                  allow_unverified: bool = False) -> str:
    """Loads the model's weights; returns the path used.

    `checkpoint`: a training model_dir or ckpt-N prefix (`checkpoint_path`, which refuses an
    unverified one unless `allow_unverified`; the model held under the key `model`, what the
    trainer writes), or a Keras `.weights.h5` file; `source` names the flag or binding it came
    from, for errors. Every model variable must be in the checkpoint: a
    checkpoint that lacks some (e.g. Keras 3 layers kept in a plain Python list are invisible to
    tf.train.Checkpoint) is an error, never a silent evaluation of random weights; so are
    non-finite weights (a diverged run).
    """
    if checkpoint.endswith(".weights.h5"):
        if not tf.io.gfile.exists(checkpoint):
            raise FileNotFoundError(f"{source}={checkpoint!r}: Keras weights file not found")
        model.load_weights(checkpoint)
        logging.info("loaded model weights from %s", checkpoint)
        return checkpoint
    path = checkpoint_path(checkpoint, source, allow_unverified)
    saved = [name for name in sorted(reader(path).get_variable_to_shape_map())
             if name.startswith("model/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
             and ".OPTIMIZER_SLOT" not in name]
    if len(saved) < len(model.variables):
        raise ValueError(f"checkpoint {path!r} holds {len(saved)} variables under the key 'model' "
                         f"but the model has {len(model.variables)}: it was written from another "
                         "config, or the model keeps layers where tf.train.Checkpoint cannot see "
                         "them (Keras 3 layers in a plain Python list are not tracked)")
    status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"checkpoint {path!r} does not match this model under the key 'model': "
                         f"is the gin config the one it was trained with? ({e})") from None
    nonfinite = [v.path for v in model.variables
                 if v.dtype.startswith("float") and not np.all(np.isfinite(v.numpy()))]
    if nonfinite:
        raise ValueError(f"checkpoint {path!r} has non-finite weights ({len(nonfinite)} "
                         f"variables, e.g. {nonfinite[0]}): it comes from a diverged run. Use an "
                         "earlier checkpoint (a stopped run names its newest good one)")
    logging.info("restored model weights from %s", path)
    return path
