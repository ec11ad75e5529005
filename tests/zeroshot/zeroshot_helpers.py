"""Zero-shot test helpers: stand-ins that follow the model and tokenizer contracts.

Contracts: tokenizer tf.string [N] -> int32 [N, L] (0 = padding); encode_text int32 [N, L] ->
float32 [N, D] unit-norm; encode_image float32 [N, H, W, 3] in [0, 1] -> float32 [N, D] unit-norm.
"""
import keras
import numpy as np
import tensorflow as tf

VOCAB, SEQ_LEN, EMBED_DIM = 97, 8, 16


def hash_tokenizer(strings):
    """Words hashed into [1, VOCAB), padded/truncated to SEQ_LEN."""
    words = tf.strings.split(tf.convert_to_tensor(strings, tf.string))
    ids = tf.cast(tf.strings.to_hash_bucket_fast(words, VOCAB - 1), tf.int32) + 1
    return ids[:, :SEQ_LEN].to_tensor(default_value=0, shape=[None, SEQ_LEN])


class StandInTextEncoder(keras.Model):
    """Masked mean of word embeddings -> Dense -> L2 normalise."""

    def __init__(self):
        super().__init__()
        self.embed = keras.layers.Embedding(VOCAB, EMBED_DIM)
        self.proj = keras.layers.Dense(EMBED_DIM)

    def call(self, token_ids):
        mask = tf.cast(token_ids > 0, tf.float32)[..., None]
        total = tf.reduce_sum(self.embed(token_ids) * mask, 1)
        mean = total / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        return tf.math.l2_normalize(self.proj(mean), axis=-1)


class StandInImageEncoder(keras.Model):
    """4x4 average pooling -> flatten -> Dense -> L2 normalise (for 8x8 images)."""

    def __init__(self):
        super().__init__()
        self.pool = keras.layers.AveragePooling2D(4)
        self.proj = keras.layers.Dense(EMBED_DIM)

    def call(self, images):
        x = self.pool(images)
        return tf.math.l2_normalize(self.proj(tf.reshape(x, [tf.shape(x)[0], -1])), axis=-1)


def bucket_encoder(num_buckets):
    """An 'image encoder' with hand-computable predictions: one-hot of floor(mean pixel * n).

    With the identity as classifier, the top-1 class of an image whose pixels are all
    (c + 0.5) / n is c; the other logits tie at 0, so top-k adds the lowest other indices.
    """
    def encode(images):
        bucket = tf.cast(tf.floor(tf.reduce_mean(images, axis=[1, 2, 3]) * num_buckets), tf.int32)
        return tf.one_hot(tf.clip_by_value(bucket, 0, num_buckets - 1), num_buckets)
    return encode


def bucket_image(bucket, num_buckets, size):
    """uint8 [size, size, 3] whose pixels decode to (bucket + 0.5) / num_buckets (+- 1/510)."""
    value = int(round((bucket + 0.5) / num_buckets * 255))
    return np.full([size, size, 3], value, np.uint8)
