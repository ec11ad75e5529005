"""Applying one step's gradients: all-reduce once, clip by global norm, apply only good updates.

Keras 3 optimizers all-reduce gradients themselves when called in a replica context, but they
clip (global_clipnorm) each replica's share BEFORE that sum, which is not clipping by the global
norm of the batch gradient. So the all-reduce happens here, once: every replica then holds the
global-batch loss and gradient, computes the same global norm and the same decision, and the
optimizer is applied in cross-replica context (`merge_call`), where Keras does not reduce again.

A step changes nothing (no weight, no optimizer slot, no update count, so the learning-rate
schedule does not advance either) when
  - its global loss or gradient norm is not finite, or the loss exceeds `max_loss` (the trainer's
    loss-spike guard): decided before the optimizer runs;
  - the update itself would leave a weight or an optimizer slot non-finite (a finite loss at an
    absurd learning rate can overflow the weights): the update is applied, checked, and rolled
    back from copies taken just before it. Checking before applying would need each optimizer's
    update rule written twice; the copies cost one read of the weights and slots per step
    (measured in benchmarks/README.md, "Update check").
"""
import collections
from typing import Optional, Sequence

import tensorflow as tf

from basic_tf.training import flat_update

UpdateResult = collections.namedtuple("UpdateResult",
                                      ["loss", "grad_norm", "applied", "loss_finite"])
UpdateResult.__doc__ = """Per replica (identical on every replica): the global-batch loss
(float32 scalar), the global gradient norm before clipping (float32 scalar), whether the update was
applied (bool scalar) and whether loss and gradient norm were finite (bool scalar: the weights
the step started from gave a usable loss, whatever became of the update)."""


def apply_update(optimizer, variables: Sequence, loss_share: tf.Tensor, grads: Sequence[tf.Tensor],
                 clip_norm: Optional[float] = None,
                 max_loss: Optional[tf.Tensor] = None,
                 flat_check: bool = False) -> UpdateResult:
    """Sums the replicas' shares, clips, and applies the update unless it is not a good one.

    Call it in a replica context: inside `strategy.run`, or with no strategy at all.

    Args:
      optimizer: a built Keras optimizer (built on `variables`, inside strategy.scope()).
      variables: the variables the gradients belong to, in order.
      loss_share: float32 scalar, this replica's share of the global-batch loss.
      grads: this replica's gradient shares, aligned with `variables` (no None).
      clip_norm: clip the global gradient to this L2 norm; None or 0 for no clipping.
      max_loss: float32 scalar; a step whose global loss exceeds it is not applied (None: +inf).
      flat_check: few large ops instead of per-variable ones, for XLA (benchmarks/README.md,
        xla_step): an optimizer with a flat rule (flat_update.supports: AdamW) is updated and
        checked over all variables concatenated (flat_update.py); others check the updated
        weights and slots in one concatenation per dtype (all_finite). Not on a DTensor mesh,
        where a concatenation would gather sharded weights.
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
    if flat_check and flat_update.supports(optimizer, variables):
        return UpdateResult(loss, *flat_update.apply_flat_adamw(optimizer, variables, loss, grads,
                                                                clip_norm, max_loss))
    norm = tf.linalg.global_norm(grads)
    loss_finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
    wanted = loss_finite
    if max_loss is not None:
        wanted &= loss <= tf.cast(max_loss, tf.float32)
    if clip_norm:
        scale = clip_norm / tf.maximum(norm, clip_norm)
        grads = [g * tf.cast(scale, g.dtype) for g in grads]

    def apply_in_cross_replica_context(strategy, grads, wanted):
        wanted = strategy.experimental_local_results(wanted)[0]  # the same on every replica
        return tf.cond(wanted, lambda: _apply_checked(strategy, optimizer, variables, grads,
                                                      flat_check),
                       lambda: tf.constant(False))

    applied = ctx.merge_call(apply_in_cross_replica_context, args=(grads, wanted))
    return UpdateResult(loss, norm, applied, loss_finite)


def optimizer_slots(optimizer) -> list:
    """The optimizer's own float variables (moments, factored statistics), without its update
    count and its learning-rate variable (a hyper-parameter that comes from the config)."""
    learning_rate = getattr(optimizer, "_learning_rate", None)
    return [v for v in optimizer.variables
            if v is not optimizer.iterations and v is not learning_rate
            and tf.as_dtype(v.dtype).is_floating]


def all_finite(tensors: Sequence[tf.Tensor], flat: bool = False) -> tf.Tensor:
    """bool scalar: every element of every tensor is finite. flat: one is_finite over a
    concatenation per dtype (a few large ops: less for XLA to compile); else one per tensor."""
    if not flat:
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(tf.reshape(t, [-1]))
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.concat(parts, 0)))
                          for parts in by_dtype.values()])


def _apply_checked(strategy, optimizer, variables, grads, flat_check: bool = False) -> tf.Tensor:
    """Applies the update; if any weight or slot came out non-finite, puts all of them back.
    Returns bool scalar: applied."""
    watched = list(variables) + optimizer_slots(optimizer)
    targets = [getattr(v, "value", v) for v in watched]  # the tf.Variable (Mirrored in a scope)
    # Reads and updates of one variable run in program order (automatic control dependencies).
    before = [tf.identity(t.read_value()) for t in targets]
    _apply(strategy, optimizer, variables, grads)
    finite = all_finite([t.read_value() for t in targets], flat_check)

    def roll_back():
        for target, old in zip(targets, before):
            strategy.extended.update(target, lambda v, x: v.assign(x), args=(old,), group=False)
        optimizer.iterations.assign_sub(1)
        return tf.constant(False)

    return tf.cond(finite, lambda: tf.constant(True), roll_back)


def _apply(strategy, optimizer, variables, grads) -> None:
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
