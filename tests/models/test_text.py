"""Text tower: pooling against NumPy on the final hidden states, padding invariance, causality,
all-padding rows, and the analytic parameter count."""
import numpy as np
import pytest
import tensorflow as tf

from basic_tf.models import TextTowerConfig, TextTransformer, text_tower_param_count

TOKENS = np.array([[5, 9, 3, 0, 0, 0],
                   [7, 2, 8, 4, 6, 1],
                   [4, 0, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0, 0]], np.int32)  # last row: all padding


def _tower(pooling="mean", causal=False, max_len=8, output_dim=None):
    config = TextTowerConfig(vocab_size=20, max_len=max_len, width=16, depth=2, num_heads=2,
                             mlp_dim=32, pooling=pooling, causal=causal)
    tower = TextTransformer(config, output_dim=output_dim)
    tower.build((None, max_len))
    return tower


@pytest.mark.parametrize("pooling", ["mean", "eos", "cls"])
def test_pooling_matches_numpy(pooling):
    tower = _tower(pooling)
    hidden, valid = tower.hidden_states(tf.constant(TOKENS))
    hidden, valid = hidden.numpy(), valid.numpy()
    pooled = tower(tf.constant(TOKENS)).numpy()
    assert np.all(np.isfinite(pooled)) and np.all(np.isfinite(hidden))
    if pooling == "mean":
        mask = (TOKENS != 0).astype(np.float32)
        expected = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]
    elif pooling == "eos":
        last = [max([i for i, t in enumerate(row) if t] or [0]) for row in TOKENS]
        expected = hidden[np.arange(len(TOKENS)), last]
    else:
        assert hidden.shape[1] == TOKENS.shape[1] + 1 and valid[:, 0].all()
        expected = hidden[:, 0]
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "eos", "cls"])
def test_extra_padding_does_not_change_embedding(pooling):
    tower = _tower(pooling, output_dim=8)
    short = tower(tf.constant(TOKENS)).numpy()
    padded = tower(tf.constant(np.pad(TOKENS, [[0, 0], [0, 2]]))).numpy()
    np.testing.assert_allclose(padded[:3], short[:3], rtol=1e-5, atol=1e-6)


def test_causal_mask_hides_later_tokens():
    tower = _tower("eos", causal=True)
    changed = TOKENS.copy()
    changed[1, 4:] = [11, 12]
    a, _ = tower.hidden_states(tf.constant(TOKENS))
    b, _ = tower.hidden_states(tf.constant(changed))
    np.testing.assert_allclose(a[1, :4], b[1, :4], rtol=1e-5, atol=1e-6)
    assert np.abs(a[1, 4:] - b[1, 4:]).max() > 1e-3
    assert np.all(np.isfinite(tower(tf.constant(TOKENS)).numpy()))  # all-padding row too
    # Non-causal: an earlier position does see the change.
    full = _tower("eos")
    a, _ = full.hidden_states(tf.constant(TOKENS))
    b, _ = full.hidden_states(tf.constant(changed))
    assert np.abs(a[1, :4] - b[1, :4]).max() > 1e-4


def test_too_long_input_is_rejected():
    with pytest.raises(ValueError, match="max_len=8"):
        _tower()(tf.zeros([1, 9], tf.int32))


@pytest.mark.parametrize("pooling", ["eos", "cls"])
def test_param_count_matches_built(pooling):
    tower = _tower(pooling, output_dim=12)
    assert text_tower_param_count(tower.config, output_dim=12) == tower.count_params()
