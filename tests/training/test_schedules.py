"""Learning-rate schedules against hand-computed values."""
import math

import numpy as np
import pytest

from basic_tf.training.schedules import WarmupDecay, learning_rate_schedule


def _values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_then_cosine_hand_values():
    sched = WarmupDecay(peak_value=1.0, total_steps=12, warmup_steps=4, decay="cosine",
                        end_value=0.1)
    # warmup (s+1)/4; then p = (s-4)/8: s=4 p=0, s=6 p=1/4, s=8 p=1/2, s>=12 p=1.
    expected = [0.25, 0.5, 0.75, 1.0, 1.0,
                0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 0.55, 0.1, 0.1]
    got = _values(sched, [0, 1, 2, 3, 4, 6, 8, 12, 100])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_linear_and_constant_and_no_warmup():
    lin = WarmupDecay(peak_value=2.0, total_steps=10, warmup_steps=0, decay="linear",
                      end_value=0.0)
    np.testing.assert_allclose(_values(lin, [0, 5, 10, 20]), [2.0, 1.0, 0.0, 0.0], atol=1e-7)
    const = WarmupDecay(peak_value=0.3, total_steps=5, warmup_steps=2, decay="constant",
                        init_value=0.1)
    # warmup from init 0.1: 0.1 + 0.2 * (s+1)/2
    np.testing.assert_allclose(_values(const, [0, 1, 2, 50]), [0.2, 0.3, 0.3, 0.3], rtol=1e-6)


def test_gin_entry_and_bad_values():
    sched = learning_rate_schedule(peak_value=1.0, total_steps=4, warmup_steps=1, decay="linear")
    np.testing.assert_allclose(_values(sched, [0, 1, 4]), [1.0, 1.0, 0.0], atol=1e-7)
    assert WarmupDecay(**sched.get_config()).get_config() == sched.get_config()
    with pytest.raises(ValueError, match="decay='step'"):
        WarmupDecay(1.0, 10, decay="step")
    with pytest.raises(ValueError, match="warmup_steps=10 must be < total_steps=10"):
        WarmupDecay(1.0, 10, warmup_steps=10)
