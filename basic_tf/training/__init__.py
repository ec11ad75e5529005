"""basic_tf.training."""
