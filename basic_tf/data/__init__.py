"""basic_tf.data."""
