"""Multi-worker runs (MultiWorkerMirroredStrategy): what each worker writes where, and resume.

Every worker runs the same command on the same model_dir. TensorFlow documents that all of them
must call the checkpoint and summary writes (a save reads sync-on-read variables, such as
BatchNorm statistics, with collectives), but only the chief may write into model_dir: two
writers of ckpt-N_temp/ remove each other's shards and MergeV2Checkpoints fails on both.

    model_dir/ckpt-N.*, checkpoint            the chief's checkpoint (its input position: "data")
    model_dir/train/, eval/, operative_config.gin   the chief's summaries and gin record
    model_dir/input_position/<task>/ckpt-N.*  each other worker's input position at step N: it
                                              reads other shards, so the chief's position is not
                                              its own (restoring that one would replay the
                                              chief's records)
    model_dir/workertemp_<task>/              a non-chief's scratch, as TensorFlow documents: its
                                              copy of the checkpoint (deleted after each save),
                                              its summaries and gin record; removed at the end

A save at step N: each non-chief writes its position for N, all workers meet (an all-reduce),
then every worker writes the checkpoint (the chief into model_dir, its index last). So once the
index names ckpt-N, every worker's position for N is on disk, wherever a worker is killed.
Restarting every worker with the same command restores ckpt-N on all of them (each non-chief
reads the chief's index) and each non-chief's own position N: the run goes on exactly.
"""
import os
from typing import NamedTuple, Optional

import tensorflow as tf
from absl import logging

from basic_tf.training import checkpoints

POSITION_DIR = "input_position"


class WorkerRole(NamedTuple):
    """This process in the cluster: `task` is '<type>-<index>' of TF_CONFIG ('' alone)."""
    task: str
    is_chief: bool
    num_workers: int


def role_of(strategy: tf.distribute.Strategy) -> WorkerRole:
    """The role of this process: a worker of a MultiWorkerMirroredStrategy cluster of several
    workers, or the only process (chief, 1 worker) for every other strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return WorkerRole("", True, 1)
    spec = resolver.cluster_spec().as_dict()
    num_workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    if num_workers < 2:
        return WorkerRole("", True, 1)
    return WorkerRole(f"{resolver.task_type}-{resolver.task_id}",
                      bool(strategy.extended.should_checkpoint), num_workers)


def write_dir(model_dir: str, role: WorkerRole) -> str:
    """Where this worker writes summaries and its gin record: model_dir for the chief, its
    scratch directory model_dir/workertemp_<task> for the others."""
    return model_dir if role.is_chief else os.path.join(model_dir, f"workertemp_{role.task}")


def remove_scratch(model_dir: str, role: WorkerRole) -> None:
    """Removes a non-chief's scratch directory (at the start: what a killed run left; at the
    end: the run's). The chief has none."""
    if not role.is_chief:
        _remove_tree(write_dir(model_dir, role))


def _remove_tree(path: str) -> None:
    """rm -r that also works on gs:// (tf.io.gfile); nothing there is fine."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every replica of every worker has called it (a one-number all-reduce)."""
    ones = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(1.0))
    total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None))
    if total != strategy.num_replicas_in_sync:  # a broken collective, not a slow one
        raise RuntimeError(f"barrier: {total} of {strategy.num_replicas_in_sync} replicas met")


class WorkerCheckpointManager(checkpoints.TrainingCheckpointManager):
    """TrainingCheckpointManager of one worker of a multi-worker run (see the module docstring).

    Args:
      strategy: the MultiWorkerMirroredStrategy; role: role_of(strategy).
      model_dir: the run's directory, the same on every worker.
      state, checkpoint_interval, max_to_keep: as TrainingCheckpointManager.
      data: this worker's input iterator; objects: the rest of the checkpoint (model, ...).
    """

    def __init__(self, strategy, role: WorkerRole, model_dir: str, state,
                 checkpoint_interval: int, max_to_keep: int, data, **objects):
        self.strategy, self.role, self.chief_dir = strategy, role, model_dir
        self._written_step = None  # orbit saves the last step twice; every worker skips the 2nd
        if role.is_chief:
            super().__init__(tf.train.Checkpoint(state=state, data=data, **objects), model_dir,
                             state, checkpoint_interval, max_to_keep)
        else:  # its own input position as the checkpoint's host part
            super().__init__(tf.train.Checkpoint(state=state, **objects),
                             os.path.join(write_dir(model_dir, role), "checkpoint"), state,
                             checkpoint_interval, max_to_keep, tf.train.Checkpoint(data=data),
                             os.path.join(model_dir, POSITION_DIR, role.task))

    def _write(self, step: int, options) -> Optional[str]:
        if step == self._written_step:
            return None
        self._written_step = step
        self._write_host(step)
        barrier(self.strategy)  # every position of step `step` is written
        path = self._write_checkpoint(step, options)
        if self.role.is_chief:
            return path
        _remove_tree(self.directory)  # written for its collectives only
        self._latest_checkpoint = os.path.join(self.chief_dir, f"ckpt-{step}")  # what logs name
        return self._latest_checkpoint

    def restore_candidates(self) -> list:
        if self.role.is_chief:
            return super().restore_candidates()
        index = tf.train.get_checkpoint_state(self.chief_dir)
        return list(index.all_model_checkpoint_paths) if index else []

    def restore_host(self, path: str) -> None:
        if self.host_checkpoint is None:
            return
        position = self.host_path(path)
        if not tf.io.gfile.exists(position + ".index"):
            raise ValueError(
                f"{position}.index is missing: {self.role.task}'s input position at the step of "
                f"{path}. Was model_dir trained with another TF_CONFIG (number of workers)? "
                "Resume with the cluster that wrote it, or use a new --model_dir.")
        super().restore_host(path)
        logging.info("%s: input position restored from %s", self.role.task, position)

    def _prune_host(self) -> None:
        """Removes this worker's positions older than the chief's oldest listed checkpoint (the
        chief may not have listed the step just written yet: newer ones stay)."""
        listed = self.restore_candidates()
        if self.role.is_chief or not listed:
            return super()._prune_host()
        oldest = min(checkpoints.step_of(p) for p in listed)
        for f in tf.io.gfile.glob(os.path.join(self.host_dir, "ckpt-*")):
            if checkpoints.step_of(os.path.basename(f).split(".")[0]) < oldest:
                tf.io.gfile.remove(f)

    def keep_only(self, paths: list) -> None:
        if self.role.is_chief:  # model_dir's index is the chief's alone
            super().keep_only(paths)

    def settle(self) -> Optional[str]:
        if self.role.is_chief:
            return super().settle()
        verified = int(self.state.verified_step.numpy())
        good = [p for p in self.restore_candidates() if checkpoints.step_of(p) <= verified]
        return good[-1] if good else None


def make_checkpoint_manager(model_dir: str, strategy, state, checkpoint_interval: int,
                            max_to_keep: int, data,
                            **objects) -> checkpoints.TrainingCheckpointManager:
    """checkpoints.make_checkpoint_manager for this process: a WorkerCheckpointManager when it
    is one worker of several, else the plain one (model_dir, `data` under the key "data")."""
    role = role_of(strategy)
    if role.num_workers == 1:
        return checkpoints.make_checkpoint_manager(model_dir, state, checkpoint_interval,
                                                   max_to_keep, data=data, **objects)
    return WorkerCheckpointManager(strategy, role, model_dir, state, checkpoint_interval,
                                   max_to_keep, data, **objects)
