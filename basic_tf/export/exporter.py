"""Exports a trained DualEncoder as a SavedModel that TF Serving loads as is.

Written with `keras.export.ExportArchive`: a plain `tf.saved_model.save` of a tf.Module holding
Keras 3 layers loads in TF2 Python but not in the TF1/C++ session loader TF Serving uses
(tests/export/export_emulator.py loads exports as TF Serving does). Tokenization
(SentencePiece, a TF Text op) is in the graph, so the server needs TF Text ops (stock TF Serving
builds have them) and Python loaders need `import tensorflow_text`.

The version directory holds, besides saved_model.pb and variables/, in assets/:
  operative_config.gin   the gin bindings the model was built with (when given: tools/export.py)
  tokenizer.model        the SentencePiece model proto used in the graph
  class_names.json       the baked class names (JSON list, label order)
  templates.json         the baked prompt templates (JSON list)
  serving.json           signatures, limits, image size, top_k: what a client needs to know;
                         the tokenizer's fingerprint (basic_tf/data/tokenizer_record.py)
"""
import dataclasses
import json
import os
import time
from typing import Callable, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import basic_tf
from basic_tf.export import layout
from basic_tf.data import tokenizer_record
from basic_tf.data.templates import normalize_template
from basic_tf.export.inputs import ServingLimits, serving_limits
from basic_tf.export.signature_table import SIGNATURES
from basic_tf.export.signatures import make_serving_functions
from basic_tf.zeroshot import prompt_checks, prompts
from basic_tf.zeroshot.classifier import build_zero_shot_classifier


def _check_list(values: Sequence[str], field: str) -> list:
    values = list(values)
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"export_for_serving: {field} must be a non-empty list of non-blank "
                         f"strings, got {values[:5]!r}{'...' if len(values) > 5 else ''}")
    return values


def export_for_serving(model, tokenizer, export_dir: str, class_names: Sequence[str],
                       templates: Sequence[str], model_name: str = "basic",
                       version: Optional[int] = None, top_k: int = 5,
                       limits: Optional[ServingLimits] = None, crop_fraction: float = 1.0,
                       antialias: bool = False, prompt_batch_size: int = 256,
                       gin_config: Union[str, Callable[[], str], None] = None,
                       base_path_prefix: Optional[str] = None,
                       allow_nameless_classes: bool = False) -> str:
    """Writes <export_dir>/<model_name>/<version>/ (SavedModel) and <export_dir>/models.config.

    Args:
      model: a built `basic_tf.models.DualEncoder` (encode_image, encode_text, logit_scale,
        image_size, max_text_len, embed_dim).
      tokenizer: `basic_tf.data.tokenizer.Tokenizer` (tf.string [N] -> int32 [N, L]), with
        L <= model.max_text_len.
      export_dir: root that TF Serving's models.config points into.
      class_names, templates: baked into `classify` (templates contain '{c}'); the templates
        are also `classify_with_labels`' default.
      model_name: the <name> of /v1/models/<name>:predict.
      version: integer >= 1; None: one more than the highest existing version.
      top_k: classes `classify` returns per image.
      limits: request bounds (default: `serving_limits()`'s defaults; the top passes the
        `serving_limits.*` bindings, basic_tf/from_gin_data.py).
      crop_fraction, antialias: the evaluation image view (`decode_and_center_crop`): pass the
        data config's (basic_tf.data.data_config: make_dataset.eval_crop_fraction /
        antialias), so serving sees images as evaluation does; not gin-bindable.
      prompt_batch_size: prompts per text-encoder call inside classify_with_labels.
      gin_config: text stored as assets/operative_config.gin, or a function giving it, called
        when the assets are written (the top passes gin's operative config); None: no such file.
      base_path_prefix: where the server sees export_dir, for models.config (e.g. "/models").
      allow_nameless_classes: export even when a class lost its name in every prompt (cut at
        the tokenizer's seq_len: its column would not depend on the name); refused by default.

    Returns:
      The absolute path of the new version directory.
    """
    start = time.time()
    class_names = prompts.check_class_names(_check_list(class_names, "class_names"),
                                            "export_for_serving: class_names")
    templates = _check_list(templates, "templates")
    repeated = sorted({n for n in class_names if class_names.count(n) > 1})
    if repeated:
        raise ValueError(f"export_for_serving: class_names repeats {repeated[:5]}; each class "
                         "needs a distinct name")
    templates = [normalize_template(t, f"export_for_serving: templates[{i}]")
                 for i, t in enumerate(templates)]
    if tokenizer.seq_len > model.max_text_len:
        raise ValueError(f"export_for_serving: tokenizer.seq_len={tokenizer.seq_len} is longer "
                         f"than the text tower's max_text_len={model.max_text_len}")
    check = prompt_checks.check_prompts(tokenizer, class_names, templates)
    for line in prompt_checks.describe(check):
        logging.warning("export prompts: %s", line)
    if check["classes_without_name"] and not allow_nameless_classes:
        names = check["classes_without_name"]
        raise ValueError(
            f"export_for_serving: class {names[0]!r} (and {len(names) - 1} more) lost its name "
            f"in every prompt: cut at the tokenizer's seq_len={tokenizer.seq_len}, e.g. "
            f"{check['name_cut_examples'][0]!r}; shorten the templates, raise "
            "make_dataset.seq_len, or accept it (tools/export.py --allow_nameless_classes)")
    limits = limits or serving_limits()
    final = layout.resolve_version_path(export_dir, model_name, version)

    class_matrix = build_zero_shot_classifier(model.encode_text, tokenizer, class_names,
                                              templates, batch_size=prompt_batch_size)
    functions = make_serving_functions(
        model, tokenizer, class_matrix, class_names, templates, top_k=top_k, limits=limits,
        crop_fraction=crop_fraction, antialias=antialias, prompt_batch_size=prompt_batch_size)
    _probe_classify(functions["classify"][0], int(model.image_size))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)   # its SentencePiece resource must be in the SavedModel
    for name, (fn, input_signature) in functions.items():
        archive.add_endpoint(name, fn, input_signature)

    serving_info = {
        "basic_tf_version": basic_tf.__version__,
        "signatures": {name: [spec.name for spec in spec_list]
                       for name, (_, spec_list) in functions.items()},
        "serving_default": next(iter(functions)),
        "optional_inputs": {name: list(row.optional) for name, row in SIGNATURES.items()
                            if row.optional},
        "top_k": min(top_k, len(class_names)),
        "image_size": int(model.image_size),
        "embed_dim": int(model.embed_dim),
        "seq_len": int(tokenizer.seq_len),
        "tokenizer": tokenizer_record.fingerprint(tokenizer.model_proto),
        "crop_fraction": crop_fraction,
        "antialias": antialias,
        "limits": dataclasses.asdict(limits),
        "prompt_check": check,
    }
    with layout.staged_dir(final) as staging:
        archive.write_out(staging, verbose=False)
        assets = os.path.join(staging, "assets")
        tf.io.gfile.makedirs(assets)
        if gin_config is not None:
            _write(os.path.join(assets, "operative_config.gin"),
                   gin_config() if callable(gin_config) else gin_config)
        _write(os.path.join(assets, "tokenizer.model"), tokenizer.model_proto)
        _write(os.path.join(assets, "class_names.json"), json.dumps(class_names, indent=1))
        _write(os.path.join(assets, "templates.json"), json.dumps(templates, indent=1))
        _write(os.path.join(assets, "serving.json"), json.dumps(serving_info, indent=1))
    layout.write_models_config(export_dir, base_path_prefix)
    logging.info("exported %d classes x %d templates to %s in %.1f s", len(class_names),
                 len(templates), final, time.time() - start)
    return final


def _probe_classify(classify, image_size: int) -> None:
    """Runs `classify` on a mid-grey PNG; refuses weights whose scores are not finite numbers.

    Finite weights can still give NaN scores (a checkpoint the divergence guard set aside holds
    values near 1e18, whose activations overflow): the export must not serve them.
    """
    probe = tf.io.encode_png(tf.fill([image_size, image_size, 3], tf.constant(128, tf.uint8)))
    scores = classify(tf.reshape(probe, [1]))["scores"].numpy()
    if not np.isfinite(scores).all():
        raise ValueError(
            f"export_for_serving: classify on a probe image gives scores {scores[0].tolist()}, "
            "not finite numbers: these weights cannot serve (a checkpoint the divergence guard "
            "moved to unverified/, or one that diverged); export a verified checkpoint")


def _write(path: str, content) -> None:
    with tf.io.gfile.GFile(path, "wb") as f:   # a str as UTF-8
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
