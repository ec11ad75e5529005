"""Random numbers keyed by (seed, element number), drawn for a whole batch at once.

The pipeline's random choices (crop window, flip, caption) must not depend on which batch or
worker an element lands in, so a restored iterator repeats them exactly: each is a function of
the run's seed and the element's number. `tf.random.stateless_*` takes one seed per call, which
would mean a call (and a seed split) per element; here a counter-based hash (splitmix64, as
used to seed xoshiro generators) of (seed, number, stream) gives every element of a batch its
own independent draws with a handful of vector ops.
"""
import tensorflow as tf

_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """splitmix64's finaliser: uint64 -> uint64, a bijection whose output bits each depend on
    every input bit."""
    xor, shift = tf.bitwise.bitwise_xor, tf.bitwise.right_shift
    x = xor(x, shift(x, _u64(30))) * _u64(0xBF58476D1CE4E5B9)
    x = xor(x, shift(x, _u64(27))) * _u64(0x94D049BB133111EB)
    return xor(x, shift(x, _u64(31)))


def _as_u64(value) -> tf.Tensor:
    return tf.bitcast(tf.cast(value, tf.int64), tf.uint64)


def combine(*parts) -> tf.Tensor:
    """int parts (scalars) -> int64 []: one key for `bits` from e.g. (run seed, file, visit)."""
    key = _u64(_GOLDEN)
    for part in parts:
        key = _mix(tf.bitwise.bitwise_xor(key, _as_u64(part)) + _u64(_GOLDEN))
    return tf.bitcast(key, tf.int64)


def bits(key, index: tf.Tensor, streams: int) -> tf.Tensor:
    """int64 key [] (`combine`), int64 element numbers [b] -> uint64 [b, streams]: independent
    random words, the same for the same (key, number) whatever else is in the batch."""
    base = _mix(tf.bitwise.bitwise_xor(_as_u64(key), _as_u64(index)))           # [b]
    stream = _as_u64(tf.range(1, streams + 1, dtype=tf.int64))
    return _mix(base[:, None] + stream[None, :] * _u64(_GOLDEN))


def uniform(words: tf.Tensor) -> tf.Tensor:
    """uint64 words (any shape) -> float32 in [0, 1) (the top 24 bits)."""
    return tf.cast(tf.bitwise.right_shift(words, _u64(40)), tf.float32) * (2.0 ** -24)


def seeds(words: tf.Tensor) -> tf.Tensor:
    """uint64 [..., 2] -> int64 [..., 2]: a seed for one `tf.random.stateless_*` call."""
    return tf.bitcast(words, tf.int64)
