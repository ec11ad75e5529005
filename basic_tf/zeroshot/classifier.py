"""Zero-shot classifier building: prompt-ensembled class embeddings (CLIP, Radford et al. 2021).

For each class, every template is filled with the class name and embedded; the embeddings are
L2-normalised, averaged over templates and normalised again. The result is a [D, C] matrix W, so
`logits = image_emb @ W` for unit-norm image embeddings [B, D].
"""
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from basic_tf.models.layers import l2_normalize
from basic_tf.zeroshot import prompts



def ensemble_prompt_embeddings(per_prompt: tf.Tensor) -> tf.Tensor:
    """float [C, T, D] prompt embeddings -> float32 [C, D] unit class embeddings: each prompt
    L2-normalised, averaged over the T templates, normalised again. The one copy of CLIP's
    ensembling: the exported classify_with_labels signature calls it too."""
    return l2_normalize(tf.reduce_mean(l2_normalize(per_prompt), axis=1))


def build_zero_shot_classifier(encode_text_fn: Callable[[tf.Tensor], tf.Tensor],
                               tokenizer: Callable[[tf.Tensor], tf.Tensor],
                               class_names: Sequence[str],
                               templates: Sequence[str],
                               batch_size: int = 512) -> np.ndarray:
    """Builds the zero-shot classifier matrix.

    Args:
      encode_text_fn: int32 token ids [N, L] -> float32 [N, D] (e.g. `model.encode_text`).
        Its output is re-normalised here, so unit norm is not required.
      tokenizer: tf.string [N] -> int32 [N, L] (e.g. `basic_tf.data.tokenizer.Tokenizer`);
        must be traceable in a tf.function and accept "" (the padding of the last batch).
      class_names: C names; templates: T strings with '{c}' where the name goes.
      batch_size: prompts per encoder call. Every call gets exactly this many prompts (the last
        one padded), so the tf.function traces once.

    Returns:
      float32 numpy [D, C]: column c = normalise(mean_t normalise(embed(template_t(class_c)))).
    """
    if not class_names or not templates:
        raise ValueError(f"need at least one class name and one template, got {len(class_names)} "
                         f"names and {len(templates)} templates")
    if batch_size < 1:
        raise ValueError(f"build_zero_shot_classifier.batch_size={batch_size} must be >= 1")
    texts = prompts.fill_templates(class_names, templates)
    num_classes, num_templates = len(class_names), len(templates)

    @tf.function(input_signature=[tf.TensorSpec([batch_size], tf.string)])
    def embed(batch_texts):
        return tf.cast(encode_text_fn(tokenizer(batch_texts)), tf.float32)

    start = time.time()
    chunks = []
    for begin in range(0, len(texts), batch_size):
        chunk = texts[begin:begin + batch_size]
        padded = chunk + [""] * (batch_size - len(chunk))
        chunks.append(embed(tf.constant(padded))[:len(chunk)])
    # Prompts are class-major: prompt k belongs to class k // T.
    per_prompt = tf.reshape(tf.concat(chunks, axis=0), [num_classes, num_templates, -1])
    weights = tf.transpose(ensemble_prompt_embeddings(per_prompt)).numpy()
    logging.info("zero-shot classifier: %d classes x %d templates = %d prompts in %.1f s",
                 num_classes, num_templates, len(texts), time.time() - start)
    return weights
