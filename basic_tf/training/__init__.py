"""Training: BASIC's contrastive gradient accumulation, the train step, optimizers and the loop."""
from basic_tf.training.accumulation import (ContrastiveStep, compute_contrastive_step,
                                            micro_batch_seeds)
from basic_tf.training.contrastive import (ContrastiveTask, contrastive_gradients,
                                           dual_encoder_hooks)

__all__ = ["ContrastiveStep", "ContrastiveTask", "compute_contrastive_step",
           "contrastive_gradients", "dual_encoder_hooks", "micro_batch_seeds"]
