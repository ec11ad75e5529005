"""basic_tf.export."""
