"""basic_tf.zeroshot."""
