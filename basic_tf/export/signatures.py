"""The four serving signatures (TF Serving Predict API), all taking raw strings.

  classify (also serving_default)
      images      tf.string [N]   encoded JPEG/PNG/WebP files
   -> classes     tf.string [N, k] top-k class names, best first
      scores      float32   [N, k] their probabilities (softmax over all C baked classes)
      class_ids   int32     [N, k] their indices into the baked class names
  classify_with_labels
      images      tf.string [N]
      class_names tf.string [C]   the classes to choose from, given at request time
      templates   tf.string [T]   optional: prompts with '{c}'; default: the baked templates
   -> scores      float32   [N, C] probabilities over the C given classes
  embed_image:  images tf.string [N] -> embeddings float32 [N, D], unit norm
  embed_text:   texts  tf.string [N] -> embeddings float32 [N, D], unit norm

Probabilities are softmax(logit_scale * cosine similarity), the model's own temperature, so
classify's scores equal classify_with_labels' scores for the baked class names and templates.
Class embeddings are prompt ensembles (CLIP): each template is filled with the class name,
embedded, L2-normalised, averaged over templates and normalised again; classify uses a matrix
baked at export time by `basic_tf.zeroshot.build_zero_shot_classifier`, classify_with_labels
recomputes the same average in the graph for the names it receives.
"""
import re
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from basic_tf.export import inputs as checks
from basic_tf.export.signature_table import SIGNATURES
from basic_tf.models.layers import l2_normalize
from basic_tf.zeroshot.classifier import ensemble_prompt_embeddings



def fill_templates(class_names: tf.Tensor, templates: tf.Tensor) -> tf.Tensor:
    """tf.string [C], [T] -> [C * T] prompts, class-major: [i * T + j] = templates[j] with
    every '{c}' replaced by class_names[i] (the order of `zeroshot.prompts.fill_templates`)."""
    # In an RE2 rewrite string a backslash escapes; double it so names are inserted verbatim.
    escaped = tf.strings.regex_replace(class_names, r"\\", r"\\\\")
    pattern = re.escape(checks.PLACEHOLDER)
    filled = tf.map_fn(lambda name: tf.strings.regex_replace(templates, pattern, name), escaped,
                       fn_output_signature=tf.TensorSpec([None], tf.string))
    return tf.reshape(filled, [-1])


def make_serving_functions(model, tokenizer, class_matrix: np.ndarray,
                           class_names: Sequence[str], templates: Sequence[str], top_k: int,
                           limits: checks.ServingLimits, crop_fraction: float = 1.0,
                           antialias: bool = False, prompt_batch_size: int = 256
                           ) -> Dict[str, Tuple[Callable, list]]:
    """Builds {signature name: (python function, input signature)} for `ExportArchive`, the
    inputs and their order from signature_table.SIGNATURES.

    Args:
      model: `basic_tf.models.DualEncoder` (encode_image, encode_text, logit_scale, image_size).
      tokenizer: `basic_tf.data.tokenizer.Tokenizer`, tf.string [N] -> int32 [N, L].
      class_matrix: float32 [D, C] baked class embeddings (for class_names, templates).
      class_names, templates: what class_matrix was built from; templates are also
        classify_with_labels' default.
      top_k: classes returned by classify (at most C).
      limits: request bounds. crop_fraction, antialias: the evaluation image view.
      prompt_batch_size: prompts per text-encoder call in classify_with_labels (bounds memory).

    The functions use only TF ops (Keras traces them with autograph off).
    """
    class_matrix = np.asarray(class_matrix, np.float32)
    if class_matrix.shape != (model.embed_dim, len(class_names)):
        raise ValueError(f"class_matrix has shape {class_matrix.shape}; expected [embed_dim, "
                         f"classes] = [{model.embed_dim}, {len(class_names)}]")
    k = min(int(top_k), len(class_names))
    if k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    baked_matrix = tf.Variable(class_matrix, trainable=False, name="class_matrix")
    baked_names = tf.constant(list(class_names), tf.string)
    default_templates = tf.constant(list(templates), tf.string)
    image_size, embed_dim = int(model.image_size), int(model.embed_dim)

    def images_to_embeddings(images, where):
        pixels = checks.decode_images(images, where, limits, image_size, crop_fraction, antialias)
        return l2_normalize(model.encode_image(pixels))

    def texts_to_embeddings(texts):
        return l2_normalize(model.encode_text(tokenizer(texts)))

    def probabilities(image_embeddings, class_embeddings_dc):
        logits = tf.cast(model.logit_scale, tf.float32) * tf.matmul(image_embeddings,
                                                                   class_embeddings_dc)
        return tf.nn.softmax(logits, axis=-1)

    def embed_prompts(prompts):
        """[P] -> [P, D] in chunks of at most prompt_batch_size (memory stays bounded)."""
        n = tf.size(prompts)
        chunk = tf.minimum(n, prompt_batch_size)
        num_chunks = (n + chunk - 1) // chunk
        padded = tf.concat([prompts, tf.fill([num_chunks * chunk - n], "")], axis=0)
        embedded = tf.map_fn(texts_to_embeddings, tf.reshape(padded, [num_chunks, chunk]),
                             fn_output_signature=tf.TensorSpec([None, embed_dim], tf.float32),
                             parallel_iterations=1)
        return tf.reshape(embedded, [-1, embed_dim])[:n]

    def classify(images):
        embeddings = images_to_embeddings(images, "classify")
        scores, ids = tf.math.top_k(probabilities(embeddings, baked_matrix), k=k)
        return {"classes": tf.gather(baked_names, ids), "scores": scores, "class_ids": ids}

    def classify_with_labels(images, class_names, templates=default_templates):
        where = "classify_with_labels"
        num_prompts = tf.size(class_names) * tf.size(templates)
        text_checks = (
            checks.check_strings(class_names, where, "class_names", limits.max_classes,
                                 limits.max_text_bytes)
            + checks.check_strings(templates, where, "templates", limits.max_templates,
                                   limits.max_text_bytes, need_placeholder=True)
            + [checks.assert_that(num_prompts <= limits.max_prompts,
                              f"{where}: {{}} class_names x {{}} templates = {{}} prompts; at most "
                              f"{limits.max_prompts} per request (send fewer of either)",
                              tf.size(class_names), tf.size(templates), num_prompts)])
        with tf.control_dependencies(text_checks):
            prompts = fill_templates(class_names, templates)
        embeddings = images_to_embeddings(images, where)
        per_prompt = tf.reshape(embed_prompts(prompts),
                                [tf.size(class_names), tf.size(templates), embed_dim])
        class_embeddings = ensemble_prompt_embeddings(per_prompt)
        return {"scores": probabilities(embeddings, tf.transpose(class_embeddings))}

    def embed_image(images):
        return {"embeddings": images_to_embeddings(images, "embed_image")}

    def embed_text(texts):
        with tf.control_dependencies(checks.check_strings(
                texts, "embed_text", "texts", limits.max_batch_size, limits.max_text_bytes,
                allow_empty=True)):
            texts = tf.identity(texts)
        return {"embeddings": texts_to_embeddings(texts)}

    functions = {"classify": classify, "classify_with_labels": classify_with_labels,
                 "embed_image": embed_image, "embed_text": embed_text}
    # In the table's order: ExportArchive also serves the first one as serving_default.
    return {name: (functions[name], [tf.TensorSpec([None], tf.string, name=input_name)
                                     for input_name in row.inputs])
            for name, row in SIGNATURES.items()}
