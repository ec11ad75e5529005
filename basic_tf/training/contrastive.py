"""Stage (b): contrastive training of the DualEncoder, the image tower trained or locked (LiT).

BASIC first pre-trains the image tower on labelled images (stage (a), pretrain.py), then trains
both towers contrastively starting from it. LiT (Zhai et al. 2022) instead locks the pre-trained
image tower: `lock_image_tower=True` freezes every image-tower weight stage (a) trained (and runs
it in inference mode); the tower's linear projection into the embedding space, new in stage (b),
still trains with the text tower and the temperature (locking a random projection would only
lose information).
"""
from typing import Dict

import tensorflow as tf

from basic_tf import losses
from basic_tf.training.accumulation import compute_contrastive_step


class _LockedImageTowerView:
    """The DualEncoder as the accumulation sees it when its image tower is locked: the tower runs
    in inference mode (BatchNorm uses and keeps its moving statistics, no dropout), as LiT
    does. Everything else is the model's own (attribute access is delegated)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_image(self, images, training=False, seed=None):
        del training, seed
        return self._model.encode_image(images, training=False)


class ContrastiveTask:
    """The trainer's task for stage (b); see trainer.py for the task contract.

    Args:
      model: a basic_tf.models.DualEncoder.
      lock_image_tower: LiT: the image tower gets no updates and runs in inference mode.
    The number of micro-batches, the loss kind and local/global loss are the gin bindings of
    accumulation.compute_contrastive_step and losses.contrastive_loss.
    """

    metric_names = ("image_to_text_accuracy", "text_to_image_accuracy")

    def __init__(self, model, lock_image_tower: bool = False):
        self.model = model
        self.lock_image_tower = lock_image_tower
        if lock_image_tower:
            model.image_tower.trainable = False
            if model.image_tower.projection is not None:
                model.image_tower.projection.trainable = True
            self._encoder = _LockedImageTowerView(model)
        else:
            self._encoder = model

    @property
    def trainable_variables(self) -> list:
        return list(self.model.trainable_variables)

    @property
    def state_variables(self) -> list:
        """Non-trainable variables the training forward pass updates (BatchNorm statistics);
        a locked tower runs in inference mode and updates none."""
        locked = set()
        if self.lock_image_tower:
            locked = {id(v) for v in self.model.image_tower.variables}
        return [v for v in self.model.non_trainable_variables if id(v) not in locked]

    def replica_step(self, batch: Dict[str, tf.Tensor], seed: tf.Tensor):
        """batch images float32 [n, H, W, 3], token_ids int32 [n, L] -> (loss share, grads,
        in-batch accuracies of this replica's n pairs)."""
        step = compute_contrastive_step(self._encoder, batch["images"], batch["token_ids"],
                                        seed=seed)
        i2t, t2i = losses.in_batch_accuracy(step.image_emb, step.text_emb)
        return step.loss, step.grads, {"image_to_text_accuracy": i2t,
                                       "text_to_image_accuracy": t2i}

    def summaries(self) -> Dict[str, float]:
        scale = float(self.model.logit_scale.numpy())
        # An absurd learning rate can drive the scale to 0 (or NaN): report it, do not crash.
        return {"temperature": 1.0 / scale if scale else float("inf"), "logit_scale": scale}
