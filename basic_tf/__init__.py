"""basic_tf: BASIC contrastive image-text dual encoders in TensorFlow / Keras 3.

Rooms (lower rooms never import higher ones):
  models/    towers (CoAtNet, ViT, text Transformer) and the DualEncoder
  losses     softmax / sigmoid contrastive losses with cross-replica negatives
  parallel/  strategy from a flag, recompute (remat) policy, DTensor meshes
  training/  contrastive gradient accumulation, train step, optimizers, loop
  data/      TFRecord schema and writers, tokenizer, tf.data pipeline
  zeroshot/  prompts and class names, classifier building, evaluation
  export/    SavedModel signatures for TF Serving
  new_experiment  from your shards to a complete gin file (basic-new-experiment)
  cli        start-up of every command in tools/ and the installed basic-* scripts
"""

__version__ = "0.1.0"
