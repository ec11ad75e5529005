"""Optimizers: AdaFactorW (BASIC's) and AdamW, with decoupled weight decay on kernels only.

Weight decay is decoupled (Loshchilov & Hutter), applied by Keras before each update as
`w -= learning_rate * weight_decay * w`, and only to variables `decays(v)` accepts: never to
norms, biases, the temperature (logit scale) or the logit bias. Gradient clipping by global norm is
not done here: Keras clips each replica's share before the all-reduce, so the train step clips
the summed gradient itself (basic_tf/training/update.py).

Build the optimizer inside `strategy.scope()` before the first step (`make_optimizer` does when
given the variables): Keras 3 AdamW fails in a replica context otherwise (feasibility.md, 5).
"""
import re
from typing import Optional, Sequence

import keras
import tensorflow as tf

OPTIMIZERS = ("adafactorw", "adamw")
# Matched (re.search) against variable paths, on top of the rank < 2 rule. "bias" also catches
# CoAtNet's 2-D relative position bias tables.
NO_DECAY_PATTERNS = ("bias", "norm", "logit_scale")


def decays(variable, no_decay_patterns: Sequence[str] = NO_DECAY_PATTERNS) -> bool:
    """Whether weight decay applies: rank >= 2 (kernels, embeddings) and no pattern in the path.

    Rank < 2 covers biases, norm scales/offsets, the temperature and the logit bias.
    """
    if len(variable.shape) < 2:
        return False
    path = getattr(variable, "path", variable.name)
    return not any(re.search(p, path) for p in no_decay_patterns)


class AdaFactorW(keras.optimizers.Optimizer):
    """Adafactor (Shazeer & Stern 2018) with decoupled weight decay and an optional momentum.

    Per variable w with gradient g (t = update number, from 1):
      second moment of g^2 + epsilon, decayed by beta_2 and bias-corrected by 1 - beta_2^t:
        factored for rank >= 2 variables whose last two dims are both >= min_dim_size_to_factor:
          row stats R [..., rows] and column stats C [..., cols], v = R C^T / mean(R)
          (O(n + m) memory instead of O(n m))
        otherwise a full accumulator v like Adam's;
      u = g / sqrt(v_hat), then u /= max(1, RMS(u) / clip_threshold) (update clipping);
      with beta_1: m = beta_1 m + (1 - beta_1) u, u = m (stored in momentum_dtype, e.g. bfloat16
        as BASIC does to save memory);
      w -= learning_rate * u (after the decoupled decay w -= learning_rate * weight_decay * w).
    Unlike Keras' Adafactor there is no relative step or parameter scaling: the learning rate is the
    schedule's.
    """

    def __init__(self, learning_rate=1e-3, beta_1: Optional[float] = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-30, clip_threshold: float = 1.0,
                 min_dim_size_to_factor: int = 128, momentum_dtype: str = "float32",
                 weight_decay: Optional[float] = None, name: str = "adafactorw", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name,
                         **kwargs)
        if beta_1 is not None and not 0.0 <= beta_1 < 1.0:
            raise ValueError(f"AdaFactorW beta_1={beta_1} must be in [0, 1) or None")
        if not 0.0 < beta_2 < 1.0:
            raise ValueError(f"AdaFactorW beta_2={beta_2} must be in (0, 1)")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.clip_threshold = clip_threshold
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.momentum_dtype = momentum_dtype

    def _factored(self, variable) -> bool:
        shape = variable.shape
        return len(shape) >= 2 and min(shape[-2], shape[-1]) >= self.min_dim_size_to_factor

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # One entry per variable (aligned with _get_variable_index); a scalar placeholder where a
        # variable does not need the slot, so the lists stay aligned and checkpointable.
        self._rows, self._cols, self._second, self._momentum = [], [], [], []
        for v in var_list:
            placeholder = lambda kind, v=v: self.add_variable((), name=f"{kind}_unused_{v.name}")
            if self._factored(v):
                shape = tuple(v.shape)
                self._rows.append(self.add_variable(shape[:-1], name=f"row_{v.name}"))
                self._cols.append(self.add_variable(shape[:-2] + shape[-1:],
                                                    name=f"col_{v.name}"))
                self._second.append(placeholder("second"))
            else:
                self._rows.append(placeholder("row"))
                self._cols.append(placeholder("col"))
                self._second.append(self.add_variable_from_reference(v, "second"))
            if self.beta_1 is not None:
                self._momentum.append(self.add_variable(
                    tuple(v.shape), dtype=self.momentum_dtype, name=f"momentum_{v.name}"))

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        g = tf.cast(gradient, tf.float32)
        lr = tf.cast(learning_rate, tf.float32)
        t = tf.cast(self.iterations + 1, tf.float32)
        b2 = self.beta_2
        g2 = tf.square(g) + self.epsilon
        if self._factored(variable):
            rows, cols = self._rows[i], self._cols[i]
            self.assign(rows, b2 * rows + (1.0 - b2) * tf.reduce_mean(g2, axis=-1))
            self.assign(cols, b2 * cols + (1.0 - b2) * tf.reduce_mean(g2, axis=-2))
            r = tf.convert_to_tensor(rows)
            v = (r[..., :, None] * tf.convert_to_tensor(cols)[..., None, :]
                 / tf.reduce_mean(r, axis=-1)[..., None, None])
        else:
            second = self._second[i]
            self.assign(second, b2 * second + (1.0 - b2) * g2)
            v = tf.convert_to_tensor(second)
        u = g * tf.math.rsqrt(v / (1.0 - tf.pow(b2, t)))
        rms = tf.sqrt(tf.reduce_mean(tf.square(u)))
        u = u / tf.maximum(1.0, rms / self.clip_threshold)
        if self.beta_1 is not None:
            m = self._momentum[i]
            u = self.beta_1 * tf.cast(m, tf.float32) + (1.0 - self.beta_1) * u
            self.assign(m, tf.cast(u, m.dtype))
        self.assign_sub(variable, tf.cast(lr * u, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "clip_threshold": self.clip_threshold,
                       "min_dim_size_to_factor": self.min_dim_size_to_factor,
                       "momentum_dtype": self.momentum_dtype})
        return config


def make_optimizer(variables: Optional[Sequence] = None,
                   kind: str = "adafactorw",
                   learning_rate=1e-3,
                   weight_decay: float = 0.0,
                   beta_1: Optional[float] = 0.9,
                   beta_2: float = 0.999,
                   epsilon: Optional[float] = None,
                   no_decay_patterns: Sequence[str] = NO_DECAY_PATTERNS,
                   clip_threshold: float = 1.0,
                   min_dim_size_to_factor: int = 128,
                   momentum_dtype: str = "float32") -> keras.optimizers.Optimizer:
    """The training optimizer, built on `variables` (call inside strategy.scope()).

    Args:
      variables: the trainable variables to build for (weight-decay exclusions are chosen from
        them by `decays`); None returns an unbuilt optimizer with no exclusions (tests).
      kind: "adafactorw" or "adamw".
      learning_rate: a float or a schedule (gin: `@learning_rate_schedule()`).
      weight_decay: decoupled decay ratio (multiplied by the learning rate), 0 for none.
      beta_1: first-moment decay (AdaFactorW: None keeps no first moment; AdamW needs one).
      beta_2: second-moment decay.
      epsilon: AdamW's denominator epsilon (default 1e-8) or AdaFactorW's g^2 offset (1e-30).
      no_decay_patterns: path regexes never decayed (on top of all rank < 2 variables).
      clip_threshold, min_dim_size_to_factor, momentum_dtype: AdaFactorW only.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"make_optimizer.kind={kind!r} is not one of {OPTIMIZERS}")
    wd = weight_decay or None
    if kind == "adamw":
        if beta_1 is None:
            raise ValueError("make_optimizer.kind='adamw' needs beta_1 (a float), got None")
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=wd or 0.0,
                                     beta_1=beta_1, beta_2=beta_2,
                                     epsilon=1e-8 if epsilon is None else epsilon)
    else:
        opt = AdaFactorW(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=1e-30 if epsilon is None else epsilon,
                         clip_threshold=clip_threshold,
                         min_dim_size_to_factor=min_dim_size_to_factor,
                         momentum_dtype=momentum_dtype, weight_decay=wd)
    if variables is not None:
        variables = list(variables)
        excluded = [v for v in variables if not decays(v, no_decay_patterns)]
        if excluded:
            opt.exclude_from_weight_decay(var_list=excluded)
        opt.build(variables)
    return opt
