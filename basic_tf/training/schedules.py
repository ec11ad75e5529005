"""Learning-rate schedules: linear warmup, then cosine or linear decay to a floor.

A schedule is a function of the optimizer's update count (`optimizer.iterations`, 0 for the first
update), so a restored run continues the same curve. Skipped (non-finite) steps do not advance it.
"""
import math

import keras
import tensorflow as tf

DECAYS = ("cosine", "linear", "constant")


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(s) for update s = 0, 1, ...:

      s <  warmup_steps:  init_value + (peak_value - init_value) * (s + 1) / warmup_steps
      s >= warmup_steps:  p = min(1, (s - warmup_steps) / (total_steps - warmup_steps)),
          cosine:   end_value + (peak_value - end_value) * (1 + cos(pi * p)) / 2
          linear:   peak_value + (end_value - peak_value) * p
          constant: peak_value
    Warmup counts (s + 1) so that no update runs at learning rate init_value; the peak is reached
    at s = warmup_steps - 1 and held, for s >= total_steps, at end_value.
    """

    def __init__(self, peak_value: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "cosine", end_value: float = 0.0, init_value: float = 0.0):
        if decay not in DECAYS:
            raise ValueError(f"learning-rate decay={decay!r} is not one of {DECAYS}")
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 and total_steps="
                             f"{total_steps} >= 1")
        if decay != "constant" and warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps={warmup_steps} must be < total_steps={total_steps} "
                             f"for a {decay} decay (the decay would have no steps)")
        if peak_value < 0 or end_value < 0 or init_value < 0:
            raise ValueError(f"learning rates must be >= 0; got peak_value={peak_value}, "
                             f"end_value={end_value}, init_value={init_value}")
        self.peak_value, self.total_steps, self.warmup_steps = peak_value, total_steps, warmup_steps
        self.decay, self.end_value, self.init_value = decay, end_value, init_value

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak_value, tf.float32)
        warm = self.warmup_steps
        if self.decay == "constant":
            after = peak
        else:
            p = tf.clip_by_value((s - warm) / float(self.total_steps - warm), 0.0, 1.0)
            end = tf.constant(self.end_value, tf.float32)
            if self.decay == "cosine":
                after = end + (peak - end) * 0.5 * (1.0 + tf.cos(math.pi * p))
            else:
                after = peak + (end - peak) * p
        if warm == 0:
            return after
        ramp = self.init_value + (self.peak_value - self.init_value) * (s + 1.0) / float(warm)
        return tf.where(s < warm, ramp, after)

    def get_config(self):
        return {"peak_value": self.peak_value, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "end_value": self.end_value, "init_value": self.init_value}


def learning_rate_schedule(peak_value: float = 1e-3, *, total_steps: int,
                           warmup_steps: int = 0, decay: str = "cosine", end_value: float = 0.0,
                           init_value: float = 0.0) -> WarmupDecay:
    """WarmupDecay by keyword (gin: `learning_rate_schedule.*`, registered in
    basic_tf.from_gin); see its docstring."""
    return WarmupDecay(peak_value, total_steps, warmup_steps, decay, end_value, init_value)
