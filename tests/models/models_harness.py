"""The harness every registered layer and model goes through (keras-hub `run_backbone_test`
style), and the DualEncoder's contract on top of it.

`run_layer_test(case)`: build -> call -> get_config/from_config (the models never read gin:
tests/test_from_gin.py) + set_weights -> same numbers, inference and seeded
training, same public attributes -> Keras (de)serialisation by registered name, or a saved
.keras file for models -> one gradient step: every trainable weight gets a finite gradient and
a small step down it lowers the loss.
"""
import copy
import dataclasses
import importlib
import json
import os
import pkgutil
import tempfile
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

import basic_tf.models
from basic_tf import config, from_gin
from basic_tf.models import DualEncoder


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """How the harness makes and calls one registered class (tiny sizes; arguments away from
    their defaults, so a field that get_config drops changes the numbers or the attributes).

    make: () -> layer; may parse gin (through basic_tf.from_gin, as the tools do).
    inputs: np.random.Generator -> tuple of arrays (the seed of random layers among them).
    call: (layer, inputs, training) -> tensor or tuple of tensors (what the loss sums).
    keras_file: save and reload a .keras file (keras.Model subclasses) instead of
      serialize/deserialize_keras_object.
    """
    make: Callable
    inputs: Callable
    call: Callable
    keras_file: bool = False


def registered_classes(package: str = "basic_tf") -> dict:
    """{class name: class} of everything every module of basic_tf.models registers with
    keras.saving.register_keras_serializable(package=package)."""
    for module in pkgutil.walk_packages(basic_tf.models.__path__, "basic_tf.models."):
        importlib.import_module(module.name)
    prefix = package + ">"
    return {key[len(prefix):]: cls for key, cls in keras.saving.get_custom_objects().items()
            if key.startswith(prefix)}


def _as_list(outputs) -> list:
    return [tf.convert_to_tensor(o) for o in (outputs if isinstance(outputs, (tuple, list))
                                              else [outputs])]


def _json(value):
    """Tuples as lists, dataclasses as dicts: config and attributes as a .keras file has them."""
    return json.loads(json.dumps(value, default=lambda v: dataclasses.asdict(v)
                                 if dataclasses.is_dataclass(v) else repr(v)))


def _is_plain(value) -> bool:
    if dataclasses.is_dataclass(value):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, (type(None), bool, int, float, str))


def public_state(layer) -> dict:
    """The layer's public plain-data attributes (numbers, strings, tuples, config dataclasses):
    what its constructor arguments became. Not `built` (weightless sub-layers build on use)."""
    return _json({k: v for k, v in vars(layer).items()
                  if not k.startswith("_") and k != "built" and _is_plain(v)})


def _assert_same_state(rebuilt, layer, what: str) -> None:
    """Same public attributes, in the layer and in each of its basic_tf sub-layers (Keras' own
    layers are Keras' business)."""
    pairs = list(zip(rebuilt._flatten_layers(), layer._flatten_layers()))
    assert len(pairs) == len(list(layer._flatten_layers())), f"{what}: sub-layers differ"
    for a, b in pairs:
        assert type(a) is type(b), f"{what}: sub-layer {a.name} is a {type(a).__name__}"
        if not type(b).__module__.startswith("basic_tf."):
            continue
        got, expected = public_state(a), public_state(b)
        differ = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected)
                  if got.get(k) != expected.get(k)}
        assert not differ, (f"{type(layer).__name__} {what}: {b.name} attributes (rebuilt, "
                            f"original): {differ}")


def _assert_same_outputs(case, layer, rebuilt, inputs, what: str) -> None:
    for training in (False, True):
        got, expected = (_as_list(case.call(m, inputs, training)) for m in (rebuilt, layer))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{type(layer).__name__} {what}, training={training}")


def _assert_rebuilt(case, layer, rebuilt, inputs, config, what: str) -> None:
    """`rebuilt` (from `config`) has the layer's attributes and config; with its weights it gives
    the same numbers."""
    assert type(rebuilt) is type(layer), what
    assert _json(rebuilt.get_config()) == _json(config), what
    if not rebuilt.built:  # a call builds it
        case.call(rebuilt, inputs, False)
    _assert_same_state(rebuilt, layer, what)
    rebuilt.set_weights(layer.get_weights())
    _assert_same_outputs(case, layer, rebuilt, inputs, what)


def _assert_gradient_step_lowers_the_loss(case, layer, inputs) -> None:
    """One step of length 1e-3 down the gradient of sum(outputs * fixed weights) lowers it;
    every trainable weight gets a finite gradient. Weightless layers: the input gradient."""
    outputs = _as_list(case.call(layer, inputs, True))
    rng = np.random.default_rng(1)
    weights = [tf.constant(rng.normal(size=o.shape), o.dtype) for o in outputs]

    def loss_fn(x=None):
        args = inputs if x is None else (x,) + tuple(inputs[1:])
        return tf.add_n([tf.reduce_sum(o * w) for o, w in
                         zip(_as_list(case.call(layer, args, True)), weights)])

    name = type(layer).__name__
    if not layer.trainable_variables:
        x = tf.constant(inputs[0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(x)
        grad = tape.gradient(loss, x).numpy()
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, name
        return
    variables = layer.trainable_variables
    with tf.GradientTape() as tape:
        before = loss_fn()
    grads = tape.gradient(before, variables)
    missing = [v.path for v, g in zip(variables, grads) if g is None]
    assert not missing, f"{name}: no gradient for {missing}"
    grads = [tf.convert_to_tensor(g) for g in grads]
    assert all(np.all(np.isfinite(g.numpy())) for g in grads), name
    norm = tf.linalg.global_norm(grads)
    assert norm > 0, name
    for v, g in zip(variables, grads):
        v.assign_sub(1e-3 * g / norm)
    after = loss_fn()
    assert after < before, (name, float(before), float(after))


def run_layer_test(case: LayerCase) -> None:
    """The whole harness on one registered class (see the module docstring)."""
    layer = case.make()
    inputs = case.inputs(np.random.default_rng(0))
    for output in _as_list(case.call(layer, inputs, False)):
        assert np.all(np.isfinite(output.numpy())), type(layer).__name__
    layer_config = copy.deepcopy(layer.get_config())
    _assert_rebuilt(case, layer, type(layer).from_config(copy.deepcopy(layer_config)), inputs,
                    layer_config, "from_config")
    if case.keras_file:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            layer.save(path)
            loaded = keras.saving.load_model(path)
        _assert_same_state(loaded, layer, ".keras file")
        _assert_same_outputs(case, layer, loaded, inputs, ".keras file")
    else:
        serialized = keras.saving.serialize_keras_object(layer)
        _assert_rebuilt(case, layer, keras.saving.deserialize_keras_object(serialized), inputs,
                        layer_config, "deserialize_keras_object")
    _assert_gradient_step_lowers_the_loss(case, layer, inputs)


def tiny_model(bindings=(), **overrides):
    """DualEncoder from gin/models/tiny.gin plus extra bindings; `overrides` replace
    DualEncoderConfig fields (remat_policy: the RematPolicy)."""
    config.parse(["models/tiny"], list(bindings))
    return from_gin.dual_encoder(**overrides)


def toy_batch(model, batch=4, seed=0):
    """float32 images [B, S, S, 3] in [0, 1], int32 tokens [B, L] with trailing padding."""
    rng = np.random.default_rng(seed)
    size, seq = model.image_size, model.max_text_len
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    tokens = rng.integers(1, model.text_config.vocab_size, size=(batch, seq)).astype(np.int32)
    lengths = rng.integers(1, seq + 1, size=batch)
    tokens[np.arange(seq)[None] >= lengths[:, None]] = 0
    return images, tokens


def run_dual_encoder_test(model):
    """Checks the public contract on `model` and returns its embeddings."""
    images, tokens = toy_batch(model)
    image_emb, text_emb = model({"images": images, "token_ids": tokens})
    d = model.embed_dim
    assert image_emb.shape == (4, d) and text_emb.shape == (4, d)
    assert image_emb.dtype == tf.float32 and text_emb.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(image_emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.encode_image(images), image_emb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.encode_text(tokens), text_emb, rtol=1e-6, atol=1e-6)

    # Variable groups: disjoint, union = trainable_variables.
    groups = [model.image_trainable_variables, model.text_trainable_variables,
              model.head_trainable_variables]
    ids = [id(v) for g in groups for v in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(v) for v in model.trainable_variables}
    assert all(groups[:2]) and groups[2]

    # tf.train.Checkpoint (used for training checkpoints) sees every weight.
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=model).write(tmp + "/ckpt")
        saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
    assert len(saved) == len(model.weights), (len(saved), len(model.weights))

    # A fresh model from get_config with the same weights gives the same numbers.
    model_config = model.get_config()
    _assert_rebuilt(LayerCase(None, None, dual_encoder_outputs), model,
                    DualEncoder.from_config(model_config), (images, tokens, tf.constant([3, 4])),
                    model_config, "from_config")
    return image_emb, text_emb


def dual_encoder_outputs(model, inputs, training):
    """inputs (images, token_ids, seed) -> (image_emb, text_emb, contrastive logits [B, B])."""
    images, tokens, seed = inputs
    image_emb = model.encode_image(images, training=training, seed=seed)
    text_emb = model.encode_text(tokens, training=training, seed=seed)
    logits = tf.matmul(image_emb, text_emb, transpose_b=True) * model.logit_scale
    return image_emb, text_emb, logits + (0.0 if model.logit_bias is None else model.logit_bias)
