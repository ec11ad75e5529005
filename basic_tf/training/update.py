"""Applying one step's gradients: all-reduce once, clip by global norm, skip non-finite updates.

Keras 3 optimizers all-reduce gradients themselves when called in a replica context, but they
clip (global_clipnorm) each replica's share BEFORE that sum, which is not clipping by the global
norm of the batch gradient. So the all-reduce happens here, once: every replica then holds the
global-batch loss and gradient, computes the same global norm and the same finite flag, and the
optimizer is applied in cross-replica context (`merge_call`), where Keras does not reduce again.

A step whose global loss or gradient norm is not finite changes nothing: no weight, no optimizer
slot, no update count (so the learning-rate schedule does not advance either).
"""
import collections
from typing import Optional, Sequence

import tensorflow as tf

UpdateResult = collections.namedtuple("UpdateResult", ["loss", "grad_norm", "applied"])
UpdateResult.__doc__ = """Per replica (identical on every replica): the global-batch loss
(float32 scalar), the global gradient norm before clipping (float32 scalar) and whether the update
was applied (bool scalar: loss and norm were finite)."""


def apply_update(optimizer, variables: Sequence, loss_share: tf.Tensor, grads: Sequence[tf.Tensor],
                 clip_norm: Optional[float] = None) -> UpdateResult:
    """Sums the replicas' shares, clips, and applies the update unless it is non-finite.

    Call it in a replica context: inside `strategy.run`, or with no strategy at all.

    Args:
      optimizer: a built Keras optimizer (built on `variables`, inside strategy.scope()).
      variables: the variables the gradients belong to, in order.
      loss_share: float32 scalar, this replica's share of the global-batch loss.
      grads: this replica's gradient shares, aligned with `variables` (no None).
      clip_norm: clip the global gradient to this L2 norm; None or 0 for no clipping.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("apply_update must run in a replica context (inside strategy.run, or "
                           "outside any strategy), not in cross-replica context")
    if len(grads) != len(variables):
        raise ValueError(f"{len(grads)} gradients for {len(variables)} variables")
    loss = tf.cast(loss_share, tf.float32)
    grads = [tf.convert_to_tensor(g) for g in grads]
    if ctx.num_replicas_in_sync > 1:
        loss, *grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss] + grads)
    norm = tf.linalg.global_norm(grads)
    finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
    if clip_norm:
        scale = clip_norm / tf.maximum(norm, clip_norm)
        grads = [g * tf.cast(scale, g.dtype) for g in grads]

    def apply_in_cross_replica_context(strategy, grads, finite):
        finite = strategy.experimental_local_results(finite)[0]  # the same on every replica
        return tf.cond(finite, lambda: _apply(strategy, optimizer, variables, grads),
                       lambda: tf.constant(False))

    ctx.merge_call(apply_in_cross_replica_context, args=(grads, finite))
    return UpdateResult(loss, norm, finite)


def _apply(strategy, optimizer, variables, grads) -> tf.Tensor:
    """Keras' `optimizer.apply` without its merge_calls (which fail in cross-replica context):
    decoupled weight decay, then `update_step` on each variable's copies, then the update count.
    No EMA, constraints, loss scaling or Keras gradient accumulation (none are used here)."""
    learning_rate = optimizer.learning_rate  # from the schedule at the current update count
    weight_decay = optimizer.weight_decay

    def update(var, grad, decay):
        if decay:
            var.assign_sub(var * tf.cast(weight_decay * learning_rate, var.dtype))
        optimizer.update_step(grad, var, learning_rate)

    for var, grad in zip(variables, grads):
        decay = bool(weight_decay) and optimizer._use_weight_decay(var)
        target = getattr(var, "value", var)  # the tf.Variable (Mirrored under a strategy)
        strategy.extended.update(target, update, args=(grad, decay), group=False)
    optimizer.iterations.assign_add(1)
    return tf.constant(True)
