"""AdamW's update as a few large ops over all variables at once (XLA, TPU).

Compiled, every per-variable op of the update is its own kernels: for tiny.gin's 70 variables
Keras' update, its finite check and roll-back made about 1,050 of the compiled step's 1,600
kernel-sized HLO instructions (benchmarks/README.md, xla_step). Here gradients, weights and both
Adam moments are concatenated into one float32 vector each ([P], P the number of weights; the
decayed variables first, so the decay is one slice), and the global norm, clipping, decoupled
decay, Adam rule and finite check run on those vectors; the whole step compiles about a third
faster (less to trace, no conditionals). The result is split back into Keras' own variables
and slots: the checkpoint keeps its keys and shapes.

A step that must not change anything (non-finite or spiking loss, non-finite gradient, or an
update that would leave a weight or moment non-finite) writes the values it read back (a select,
elementwise), so no copies are taken before the update and no conditional is compiled.

The arithmetic is Keras 3's Adam.update_step (keras/src/optimizers/adam.py) and update.py's
decoupled decay, op for op and in the same order: the update equals the per-variable one to
float32 rounding (only the global norm sums in another order).
"""
from typing import Optional, Sequence

import keras
import tensorflow as tf


def supports(optimizer, variables: Sequence) -> bool:
    """Whether `optimizer` has a flat rule here: Keras Adam / AdamW without AMSGrad or EMA on
    float32 variables (tiny.gin and every shipped adamw config). Others take update.py's
    per-variable path."""
    return (isinstance(optimizer, keras.optimizers.Adam) and not optimizer.amsgrad
            and not getattr(optimizer, "use_ema", False)
            and all(tf.as_dtype(v.dtype) == tf.float32 for v in variables))


def _concat(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Tensors of any shapes -> float32 [sum of their sizes], in order."""
    if not tensors:
        return tf.zeros([0], tf.float32)
    return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], 0)


def apply_flat_adamw(optimizer, variables: Sequence, loss: tf.Tensor, grads: Sequence[tf.Tensor],
                     clip_norm: Optional[float], max_loss: Optional[tf.Tensor]):
    """update.apply_update's decision and AdamW update, flat. Call in a replica context with
    `loss` (float32 scalar) and `grads` already summed over replicas.

    -> (grad_norm float32 scalar, applied bool scalar, loss_finite bool scalar)."""
    ctx = tf.distribute.get_replica_context()
    decay_on = bool(optimizer.weight_decay)
    decayed = [decay_on and optimizer._use_weight_decay(v) for v in variables]
    order = ([i for i, d in enumerate(decayed) if d]
             + [i for i, d in enumerate(decayed) if not d])
    sizes = [variables[i].shape.num_elements() for i in order]
    n_decayed = sum(size for i, size in zip(order, sizes) if decayed[i])
    index = [optimizer._get_variable_index(variables[i]) for i in order]
    moments = [optimizer._momentums[j] for j in index]
    velocities = [optimizer._velocities[j] for j in index]

    g = _concat([grads[i] for i in order])
    norm = tf.sqrt(tf.reduce_sum(tf.square(g)))
    loss_finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
    wanted = loss_finite
    if max_loss is not None:
        wanted &= loss <= tf.cast(max_loss, tf.float32)
    if clip_norm:
        g = g * (clip_norm / tf.maximum(norm, clip_norm))

    # Keras' Adam.update_step and update._apply's decay, on [P] vectors.
    lr = tf.cast(optimizer.learning_rate, tf.float32)
    w_old = _concat([variables[i] for i in order])
    m_old, v_old = _concat(moments), _concat(velocities)
    w = w_old
    if n_decayed:
        head = w[:n_decayed]
        w = tf.concat([head - head * tf.cast(optimizer.weight_decay * lr, tf.float32),
                       w[n_decayed:]], 0)
    local_step = tf.cast(optimizer.iterations + 1, tf.float32)
    beta_1_power = tf.pow(tf.cast(optimizer.beta_1, tf.float32), local_step)
    beta_2_power = tf.pow(tf.cast(optimizer.beta_2, tf.float32), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = m_old + (g - m_old) * (1 - optimizer.beta_1)
    v = v_old + (tf.square(g) - v_old) * (1 - optimizer.beta_2)
    w = w - (m * alpha) / (tf.sqrt(v) + optimizer.epsilon)
    finite = tf.reduce_all(tf.math.is_finite(tf.concat([w, m, v], 0)))
    applied = wanted & finite

    targets, values = [], []
    for group, new, old in ((list(variables[i] for i in order), w, w_old),
                            (moments, m, m_old), (velocities, v, v_old)):
        kept = tf.where(applied, new, old)
        for var, part in zip(group, tf.split(kept, sizes)):
            targets.append(getattr(var, "value", var))  # the tf.Variable (Mirrored in a scope)
            values.append(tf.reshape(part, var.shape))

    def assign_in_cross_replica_context(strategy, values, applied):
        for target, value in zip(targets, values):
            strategy.extended.update(target, lambda t, x: t.assign(x), args=(value,), group=False)
        applied = strategy.experimental_local_results(applied)[0]
        optimizer.iterations.assign_add(tf.cast(applied, optimizer.iterations.dtype))

    ctx.merge_call(assign_in_cross_replica_context, args=(values, applied))
    return norm, applied, loss_finite
