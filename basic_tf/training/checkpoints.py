"""Training checkpoints: everything a resumed run needs to continue exactly.

Keys of the checkpoint (other tools read them): model (the keras.Model: DualEncoder or stage (a)
ImageClassifier), optimizer (`optimizer_state`: update count and slots), state (global step,
non-finite step counters), data (the input iterator's position, shuffle buffers included),
skipped_records (data pipeline counter).

Atomic: tf.train.CheckpointManager writes ckpt-N.index/.data (TF writes the shards to a temporary
prefix and merges them into place) and only then rewrites the `checkpoint` index file (an atomic
rename), which is what `latest_checkpoint` reads. A kill during a save leaves the previous
checkpoint as the latest; tests/training/test_resume_kill.py checks both a SIGKILL mid-run and a
half-written newer checkpoint.
"""
from typing import Optional

import tensorflow as tf


def optimizer_state(optimizer) -> tf.train.Checkpoint:
    """What a checkpoint keeps of a Keras 3 optimizer: its update count and its own variables.

    Checkpointing the optimizer object itself would also save the model's variables through its
    `_trainable_variables` list, and, that path being the shorter one, under optimizer/... keys
    instead of model/... (tools reading model/ keys, e.g. zero-shot restore, would miss them).
    The slots are restored by position, which the optimizer's build order fixes.
    """
    return tf.train.Checkpoint(
        iterations=optimizer.iterations,
        variables=[v for v in optimizer.variables if v is not optimizer.iterations])


def make_checkpoint_manager(model_dir: str, step: tf.Variable, checkpoint_interval: int,
                            max_to_keep: int = 3, **objects) -> tf.train.CheckpointManager:
    """A manager saving `objects` (keyword = checkpoint key) to model_dir as ckpt-<step>.

    `checkpoint_interval` is in steps; orbit's Controller saves after the first loop of a
    process, then when that many steps passed since the last save (checked after each loop),
    and at the end of training.
    """
    if checkpoint_interval < 1:
        raise ValueError(f"checkpoint_interval={checkpoint_interval} must be >= 1 steps")
    checkpoint = tf.train.Checkpoint(**objects)
    return tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=max_to_keep,
                                      step_counter=step, checkpoint_interval=checkpoint_interval)


def restore_latest(manager: tf.train.CheckpointManager) -> Optional[str]:
    """Restores the newest checkpoint of the manager's directory (None if there is none).

    Every object of the training checkpoint must be found in it: a checkpoint from another
    config (other model shapes, optimizer kind) is an error, not a silent partial restore.
    """
    path = manager.latest_checkpoint
    if path is None:
        return None
    status = manager.checkpoint.restore(path)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(
            f"checkpoint {path!r} does not match this run: some model/optimizer/state/data "
            f"objects are missing from it. Is model_dir holding a run of another gin config? "
            f"Use a new --model_dir or the original config. ({e})") from None
    return path
