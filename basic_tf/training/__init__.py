"""Training: BASIC's contrastive gradient accumulation, the train step, optimizers and the loop."""
from basic_tf.training.accumulation import (ContrastiveStep, compute_contrastive_step,
                                            contrastive_gradients, micro_batch_seeds)

__all__ = ["ContrastiveStep", "compute_contrastive_step", "contrastive_gradients",
           "micro_batch_seeds"]
