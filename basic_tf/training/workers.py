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
import functools
import os
from typing import NamedTuple

import tensorflow as tf

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
        checkpoints.remove_tree(write_dir(model_dir, role))


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every replica of every worker has called it (a one-number all-reduce)."""
    ones = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(1.0))
    total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None))
    if total != strategy.num_replicas_in_sync:  # a broken collective, not a slow one
        raise RuntimeError(f"barrier: {total} of {strategy.num_replicas_in_sync} replicas met")


def worker_checkpoint_manager(strategy, role: WorkerRole, model_dir: str, state,
                              checkpoint_interval: int, max_to_keep: int, data,
                              **objects) -> checkpoints.TrainingCheckpointManager:
    """The checkpoint manager of one worker of a multi-worker run (see the module docstring).

    Args:
      strategy: the MultiWorkerMirroredStrategy; role: role_of(strategy).
      model_dir: the run's directory, the same on every worker.
      state, checkpoint_interval, max_to_keep: as checkpoints.TrainingCheckpointManager.
      data: this worker's input iterator; objects: the rest of the checkpoint (model, ...).
    """
    meet = functools.partial(barrier, strategy)  # every position of the step is written
    if role.is_chief:
        return checkpoints.TrainingCheckpointManager(
            checkpoints.training_checkpoint(state, data=data, **objects), model_dir, state,
            checkpoint_interval, max_to_keep, before_write=meet)
    # Its own input position is the checkpoint's host part; its copy of the checkpoint, scratch.
    return checkpoints.TrainingCheckpointManager(
        checkpoints.training_checkpoint(state, **objects), model_dir, state, checkpoint_interval,
        max_to_keep, host_checkpoint=tf.train.Checkpoint(data=data),
        host_dir=os.path.join(model_dir, POSITION_DIR, role.task),
        write_dir=os.path.join(write_dir(model_dir, role), "checkpoint"), worker=role.task,
        before_write=meet)


def make_checkpoint_manager(model_dir: str, strategy, state, checkpoint_interval: int,
                            max_to_keep: int, data,
                            **objects) -> checkpoints.TrainingCheckpointManager:
    """checkpoints.make_checkpoint_manager for this process: worker_checkpoint_manager's when it
    is one worker of several, else the plain one (model_dir, `data` under the key "data")."""
    role = role_of(strategy)
    if role.num_workers == 1:
        return checkpoints.make_checkpoint_manager(model_dir, state, checkpoint_interval,
                                                   max_to_keep, data=data, **objects)
    return worker_checkpoint_manager(strategy, role, model_dir, state, checkpoint_interval,
                                     max_to_keep, data, **objects)
