"""Stage (a): supervised pre-training of the image tower (BASIC's JFT stage; any labelled
TFRecords here), and loading that tower into stage (b)'s DualEncoder.

The model is basic_tf.models.ImageClassifier (the DualEncoder's image tower without its
contrastive projection, plus a classification head; gin `image_classifier_config.*`). Its
checkpoint keeps the tower under model/image_tower; `restore_image_tower` copies every tower
weight (BatchNorm statistics included) into a DualEncoder, whose projection stays new.
"""
from typing import Dict

import tensorflow as tf

from basic_tf.models import ImageClassifier
from basic_tf.training import checkpoints


class PretrainTask:
    """The trainer's task for stage (a): softmax cross-entropy on the "labels" of each batch.

    Records without a label (label -1) do not count; the loss is the mean over the labelled
    examples of the global batch (each replica returns its share of it).
    """

    metric_names = ("accuracy",)

    def __init__(self, model: ImageClassifier):
        self.model = model

    @property
    def trainable_variables(self) -> list:
        return list(self.model.trainable_variables)

    @property
    def state_variables(self) -> list:
        """Non-trainable variables the training forward pass updates (BatchNorm statistics)."""
        return list(self.model.non_trainable_variables)

    def replica_step(self, batch: Dict[str, tf.Tensor], seed: tf.Tensor):
        """batch images float32 [n, H, W, 3], labels int32 [n] (-1: none) -> (loss share,
        grads, this replica's top-1 accuracy over its labelled examples)."""
        labels = tf.cast(batch["labels"], tf.int32)
        num_classes = self.model.num_classes
        check = tf.debugging.assert_less(
            labels, num_classes,
            message=f"a label is >= image_classifier_config.num_classes={num_classes}")
        with tf.control_dependencies([check]):
            labelled = tf.cast(labels >= 0, tf.float32)
        count = tf.reduce_sum(labelled)
        ctx = tf.distribute.get_replica_context()
        global_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(batch["images"], training=True, seed=seed)
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.maximum(labels, 0), tf.cast(logits, tf.float32))
            loss_share = tf.reduce_sum(xent * labelled) / tf.maximum(global_count, 1.0)
        grads = tape.gradient(loss_share, variables)
        grads = [tf.zeros(v.shape, v.dtype) if g is None else g for v, g in zip(variables, grads)]
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        accuracy = tf.reduce_sum(correct * labelled) / tf.maximum(count, 1.0)
        return loss_share, grads, {"accuracy": accuracy}

    def summaries(self) -> Dict[str, float]:
        return {}


def restore_image_tower(dual_encoder, checkpoint: str) -> str:
    """Copies a stage (a) checkpoint's image tower into `dual_encoder.image_tower`.

    `checkpoint`: a stage (a) model_dir (its latest checkpoint) or a ckpt-N prefix. Every tower
    variable of the stage (a) model must be in the checkpoint and must match the DualEncoder's
    tower by path and shape; only the DualEncoder's projection (new in stage (b)) is left as
    initialised. Returns the checkpoint path used.
    """
    path = checkpoints.checkpoint_path(checkpoint, "train.init_image_tower_from")
    source = ImageClassifier(  # only the tower is read: the DualEncoder's own tower config
        num_classes=2, image_tower=dual_encoder.config.image_tower,
        image_config=dual_encoder.image_config, image_size=dual_encoder.image_size).image_tower
    status = tf.train.Checkpoint(model=tf.train.Checkpoint(image_tower=source)).restore(path)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"checkpoint {path!r} holds no image tower of this gin config under "
                         f"model/image_tower (stage (a) run with other dual_encoder_config / "
                         f"tower bindings?): {e}") from None
    by_path = {v.path: v for v in source.variables}
    target = dual_encoder.image_tower
    projection = {id(v) for v in target.projection.variables} if target.projection else set()
    for v in target.variables:
        if id(v) in projection:
            continue
        src = by_path.pop(v.path, None)
        if src is None or tuple(src.shape) != tuple(v.shape):
            raise ValueError(f"stage (a) image tower has no variable {v.path} of shape "
                             f"{tuple(v.shape)} (found {None if src is None else src.shape})")
        v.assign(src)
    if by_path:
        raise ValueError(f"stage (a) image tower variables not in the DualEncoder's tower: "
                         f"{sorted(by_path)}")
    return path
