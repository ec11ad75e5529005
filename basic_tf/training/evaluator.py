"""Periodic evaluation during stage (b): validation loss and the zero-shot hook.

The hook (issue item 7) is any callable `eval_fn(model) -> {name: float}`, e.g. the zero-shot
room's `basic_tf.zeroshot.run.periodic_eval_fn(tokenizer, tasks)`. It runs in eager mode after
the validation batches, every `train.eval_interval` steps; its scalars go to TensorBoard
(model_dir/eval) and the log next to the validation loss.
"""
from typing import Callable, Dict, Optional

import orbit
import tensorflow as tf

from basic_tf import losses
from basic_tf.parallel.dtensor import to_numpy

EvalFn = Callable[[object], Dict[str, float]]


class ContrastiveEvaluator(orbit.StandardEvaluator):
    """Validation contrastive loss and in-batch accuracies over full batches, then `eval_fn`.

    loss_fn: (image_emb, text_emb) -> loss share, the training loss (ContrastiveTask.loss_fn).
    eval_dataset: a distributed dataset of evaluation batches (data pipeline, training=False).
    The pipeline pads its last batches with mask-0 rows; a padded batch would add fake negatives,
    so only batches whose every row (over all replicas) is real are counted.

    placement: the run's Placement (placement.py); eval_dataset is its eval_input(...). Where it
    cannot compile a loop over the dataset (a DTensor mesh) each batch is fetched eagerly and
    evaluated by one compiled function, traced in the placement's context, as the Trainer does.
    """

    def __init__(self, placement, model, loss_fn: Callable, eval_dataset,
                 eval_fn: Optional[EvalFn] = None):
        super().__init__(eval_dataset, orbit.StandardEvaluatorOptions(
            use_tf_function=placement.compiles_loops))
        self.placement, self.strategy = placement, placement.strategy
        self.model, self.eval_fn, self.loss_fn = model, eval_fn, loss_fn
        self._compiled_batch = tf.function(self.eval_batch, autograph=False)

    def eval_begin(self):
        return {"validation/loss": 0.0, "validation/image_to_text_accuracy": 0.0,
                "validation/text_to_image_accuracy": 0.0, "batches": 0}

    def _replica_fn(self, images, token_ids, mask):
        model = self.model
        image_emb = model.encode_image(images, training=False)
        text_emb = model.encode_text(token_ids, training=False)
        ctx = tf.distribute.get_replica_context()
        padded = 1.0 - tf.reduce_min(tf.cast(mask, tf.float32))  # 1 if this batch has padding
        full = tf.cast(ctx.all_reduce(tf.distribute.ReduceOp.SUM, padded) == 0.0, tf.float32)
        loss = self.loss_fn(image_emb, text_emb)
        i2t, t2i = losses.in_batch_accuracy(image_emb, text_emb)
        return loss, full, i2t, t2i

    def eval_step(self, iterator):
        if self.placement.compiles_loops:  # orbit compiled this step (and its loop)
            return self.eval_batch(next(iterator))
        with self.placement.trace_context():
            return self._compiled_batch(next(iterator))

    @tf.autograph.experimental.do_not_convert  # plain Python; converting the model is slow
    def eval_batch(self, batch):
        """Summed loss, the all-real flag and mean accuracies of one global batch."""
        loss, full, i2t, t2i = self.strategy.run(
            self._replica_fn, args=(batch["images"], batch["token_ids"], batch["mask"]))
        reduce = lambda op, t: self.strategy.reduce(op, t, axis=None)
        return {"loss": reduce(tf.distribute.ReduceOp.SUM, loss),
                "full": self.placement.first_replica(full),
                "i2t": reduce(tf.distribute.ReduceOp.MEAN, i2t),
                "t2i": reduce(tf.distribute.ReduceOp.MEAN, t2i)}

    def eval_reduce(self, state, step_outputs):
        value = {name: float(to_numpy(v)) for name, v in step_outputs.items()}
        if value["full"] == 1.0:
            state["validation/loss"] += value["loss"]
            state["validation/image_to_text_accuracy"] += value["i2t"]
            state["validation/text_to_image_accuracy"] += value["t2i"]
            state["batches"] += 1
        return state

    def eval_end(self, state):
        n = state.pop("batches")
        out = {k: v / n for k, v in state.items()} if n else {}
        out["validation/full_batches"] = n
        if self.eval_fn is not None:
            out.update({k: float(v) for k, v in self.eval_fn(self.model).items()})
        return out
