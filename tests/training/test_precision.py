"""bfloat16 mixed precision: bf16 compute, float32 variables, loss, embeddings and temperature,
and the same loss as the float32 model with the same weights (to bf16 accuracy)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from basic_tf import config, from_gin
from basic_tf.training import precision
from basic_tf.training.contrastive import ContrastiveTask


VIT = ["dual_encoder_config.image_tower = 'vit'", "vit_config.patch_size = 8",
       "vit_config.width = 64", "vit_config.depth = 2", "vit_config.num_heads = 2",
       "vit_config.pooling = 'gap'"]


@pytest.mark.parametrize("tower", ["vit", "coatnet"])
def test_mixed_bfloat16_keeps_loss_logits_and_temperature_float32(tower):
    config.parse(["models/tiny"], VIT if tower == "vit" else [])
    with precision.dtype_policy("mixed_bfloat16"):
        mixed = from_gin.dual_encoder()
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    full = from_gin.dual_encoder()
    full.set_weights(mixed.get_weights())
    rng = np.random.default_rng(0)
    batch = {"images": tf.constant(rng.uniform(size=(8, 32, 32, 3)), tf.float32),
             "token_ids": tf.constant(np.where(np.arange(16) < 10,
                                               rng.integers(3, 1000, (8, 16)), 0), tf.int32)}
    seed = tf.constant([1, 2], tf.int32)
    loss_m, grads_m, _ = ContrastiveTask(mixed).replica_step(batch, seed)
    loss_f, grads_f, _ = ContrastiveTask(full).replica_step(batch, seed)

    assert mixed.image_tower.compute_dtype == "bfloat16"
    assert mixed.text_tower.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in mixed.variables)
    assert mixed.logit_scale.dtype == tf.float32
    assert mixed.encode_image(batch["images"]).dtype == tf.float32
    assert mixed.encode_text(batch["token_ids"]).dtype == tf.float32
    assert loss_m.dtype == tf.float32 and np.isfinite(loss_m.numpy())
    assert all(tf.convert_to_tensor(g).dtype == tf.float32 for g in grads_m)
    np.testing.assert_allclose(loss_m.numpy(), loss_f.numpy(), rtol=2e-2)
    # The temperature's gradient comes from the float32 loss alone: close to float32's.
    np.testing.assert_allclose(grads_m[0].numpy(), grads_f[0].numpy(), rtol=5e-2, atol=1e-3)
    assert mixed.trainable_variables[0] is mixed.log_logit_scale


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="mixed_float16"):
        with precision.dtype_policy("mixed_float16"):
            pass
