"""Stage (b): contrastive training of the DualEncoder, the image tower trained or locked (LiT).

BASIC first pre-trains the image tower on labelled images (stage (a), pretrain.py), then trains
both towers contrastively starting from it. LiT (Zhai et al. 2022) instead locks the pre-trained
image tower: `lock_image_tower=True` freezes every image-tower weight stage (a) trained (and runs
it in inference mode); the tower's linear projection into the embedding space, new in stage (b),
still trains with the text tower and the temperature (locking a random projection would only
lose information).

This module is where a DualEncoder meets the model-free accumulation (accumulation.py): it
builds the encoders, the loss and the variable groups the accumulation takes, LiT included
(`dual_encoder_hooks`, the one place that knows about locking).
"""
import collections
import math
from typing import Dict

import tensorflow as tf

from basic_tf import losses
from basic_tf.training.accumulation import compute_contrastive_step

ContrastiveHooks = collections.namedtuple(
    "ContrastiveHooks", ["encode_image_fn", "encode_text_fn", "loss_fn", "image_variables",
                         "text_variables", "head_variables"])
ContrastiveHooks.__doc__ = """What compute_contrastive_step needs of a model (see its Args)."""


def dual_encoder_hooks(model, *, loss_kind: str = "softmax", local_loss: bool = False,
                       loss_chunk: int = 0, lock_image_tower: bool = False) -> ContrastiveHooks:
    """The accumulation's hooks for a DualEncoder.

    loss_kind / local_loss / loss_chunk: losses.contrastive_loss's `kind` / `local_loss` /
    `chunk` (with the model's logit scale and bias). lock_image_tower (LiT): the image tower runs in inference mode
    (BatchNorm uses and keeps its moving statistics, no dropout) and only its projection trains.
    """
    if lock_image_tower:
        projection = model.image_tower.projection
        image_variables = [] if projection is None else list(projection.trainable_variables)
        encode_image_fn = lambda images, seed: model.encode_image(images, training=False)
    else:
        image_variables = list(model.image_trainable_variables)
        encode_image_fn = lambda images, seed: model.encode_image(images, training=True,
                                                                  seed=seed)

    def loss_fn(image_emb, text_emb):
        return losses.contrastive_loss(image_emb, text_emb, model.logit_scale, kind=loss_kind,
                                       logit_bias=model.logit_bias, local_loss=local_loss,
                                       chunk=loss_chunk)

    return ContrastiveHooks(
        encode_image_fn=encode_image_fn,
        encode_text_fn=lambda tokens, seed: model.encode_text(tokens, training=True, seed=seed),
        loss_fn=loss_fn, image_variables=image_variables,
        text_variables=list(model.text_trainable_variables),
        head_variables=list(model.head_trainable_variables))


class ContrastiveTask:
    """The trainer's task for stage (b); see trainer.py for the task contract.

    Args:
      model: a basic_tf.models.DualEncoder.
      num_micro_batches: BASIC's exact accumulation over this many micro-batches per replica
        (gin `train.num_micro_batches`).
      loss_kind: 'softmax' or 'sigmoid' (`train.loss_kind`); local_loss: `train.local_loss`.
      loss_chunk: `train.loss_chunk`: the loss over blocks of this many columns, recomputed in
        the backward pass (memory O(N x loss_chunk), not N^2); 0: unchunked.
      lock_image_tower: LiT: the image tower gets no updates and runs in inference mode.
    """

    metric_names = ("image_to_text_accuracy", "text_to_image_accuracy")

    def __init__(self, model, *, num_micro_batches: int = 1, loss_kind: str = "softmax",
                 local_loss: bool = False, loss_chunk: int = 0, lock_image_tower: bool = False):
        self.model = model
        self.num_micro_batches = num_micro_batches
        self.loss_chunk = loss_chunk
        self.lock_image_tower = lock_image_tower
        self.hooks = dual_encoder_hooks(model, loss_kind=loss_kind, local_loss=local_loss,
                                        loss_chunk=loss_chunk, lock_image_tower=lock_image_tower)
        trained = {id(v) for v in self._hook_variables}
        # The model's order (the optimizer's slots are checkpointed by position).
        self._trainable = [v for v in model.trainable_variables if id(v) in trained]

    @property
    def loss_fn(self):
        """(image_emb, text_emb) -> loss share: the training loss (the evaluator's too)."""
        return self.hooks.loss_fn

    @property
    def _hook_variables(self) -> list:
        h = self.hooks
        return list(h.image_variables) + list(h.text_variables) + list(h.head_variables)

    @property
    def trainable_variables(self) -> list:
        return list(self._trainable)

    @property
    def state_variables(self) -> list:
        """Non-trainable variables the training forward pass updates (BatchNorm statistics);
        a locked tower runs in inference mode and updates none."""
        locked = set()
        if self.lock_image_tower:
            locked = {id(v) for v in self.model.image_tower.variables}
        return [v for v in self.model.non_trainable_variables if id(v) not in locked]

    def gradients(self, images: tf.Tensor, token_ids: tf.Tensor, seed: tf.Tensor):
        """ContrastiveStep of this replica's batch, grads aligned with trainable_variables."""
        h = self.hooks
        step = compute_contrastive_step(
            h.encode_image_fn, h.encode_text_fn, h.loss_fn, images, token_ids,
            image_variables=h.image_variables, text_variables=h.text_variables,
            head_variables=h.head_variables, embed_dim=self.model.embed_dim,
            num_micro_batches=self.num_micro_batches, seed=seed)
        by_id = {id(v): g for v, g in zip(self._hook_variables, step.grads)}
        return step._replace(grads=[by_id[id(v)] for v in self._trainable])

    def replica_step(self, batch: Dict[str, tf.Tensor], seed: tf.Tensor):
        """batch images float32 [n, H, W, 3], token_ids int32 [n, L] -> (loss share, grads,
        in-batch accuracies of this replica's n pairs; with loss_chunk in column blocks too, of
        gcd(loss_chunk, n) columns, so no [n, n] matrix is built)."""
        step = self.gradients(batch["images"], batch["token_ids"], seed)
        n = step.image_emb.shape[0]
        chunk = math.gcd(self.loss_chunk, n) if self.loss_chunk and n else self.loss_chunk
        i2t, t2i = losses.in_batch_accuracy(step.image_emb, step.text_emb, chunk=chunk)
        return step.loss, step.grads, {"image_to_text_accuracy": i2t,
                                       "text_to_image_accuracy": t2i}

    def summaries(self) -> Dict[str, float]:
        scale = float(self.model.logit_scale.numpy())
        # An absurd learning rate can drive the scale to 0 (or NaN): report it, do not crash.
        return {"temperature": 1.0 / scale if scale else float("inf"), "logit_scale": scale}


def contrastive_gradients(model, images: tf.Tensor, token_ids: tf.Tensor,
                          num_micro_batches: int, *, seed: tf.Tensor,
                          loss_kind: str = "softmax", local_loss: bool = False,
                          loss_chunk: int = 0):
    """(loss, grads) of a DualEncoder's contrastive loss; grads aligned with
    model.trainable_variables (the task's gradients, for benchmarks, tests and notebooks).

    In a replica context both are this replica's share: the sum over replicas is the global-batch
    loss and its exact gradient, whatever num_micro_batches is.
    """
    task = ContrastiveTask(model, num_micro_batches=num_micro_batches, loss_kind=loss_kind,
                           local_loss=local_loss, loss_chunk=loss_chunk)
    step = task.gradients(images, token_ids, seed)
    return step.loss, step.grads
