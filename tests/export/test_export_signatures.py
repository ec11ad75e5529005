"""The exported SavedModel against the Keras model: in a fresh TF-only process (TF2 loader and
TF1 session loader), through the wrapped saved_model_cli, and its SignatureDefs and assets."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

from basic_tf.export.signature_table import SIGNATURES
from export_helpers import (CLASS_NAMES, IMAGE_NAMES, LIMITS, OTHER_NAMES, OTHER_TEMPLATES,
                            SEQ_LEN, TEMPLATES, TEXTS, TOL, TOP_K, b64_list)

HERE = os.path.dirname(os.path.abspath(__file__))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(width, height):
    """The first bytes of a PNG that claims a width x height canvas."""
    return PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR" + width.to_bytes(4, "big") + \
        height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00" + b"\x00" * 16


def bad_requests(png):
    """(signature, inputs, what the error must say) for each kind of bad input."""
    huge = _png_header(100_000, 100_000)
    labels = {"images": [png], "class_names": ["a", "b"], "templates": ["{c}"]}
    return [
        ("classify", {"images": []}, "classify: images has 0 entries; send between 1 and 8"),
        ("classify", {"images": [png, b"hello"]}, "classify: images[1] is not a JPEG or PNG"),
        ("embed_image", {"images": [png] * 9}, "images has 9 entries; send between 1 and 8"),
        ("embed_image", {"images": [png, PNG_SIGNATURE + b"\x00" * 70_000]},
         "images[1] is 70008 bytes; at most 65536 allowed"),
        ("embed_image", {"images": [huge]}, "images[0] is 100000x100000 pixels; at most 4096"),
        ("embed_image", {"images": [b"\xff\xd8\xff" + b"\x00" * 20]}, "JPEG"),
        ("embed_text", {"texts": ["x" * 65]}, "embed_text: texts[0] is 65 bytes; at most 64"),
        ("embed_text", {"texts": ["ok", b"\xff\xfe"]}, "texts[1] is not valid UTF-8"),
        ("classify_with_labels", dict(labels, class_names=list("abcdefg")),
         "class_names has 7 entries; send between 1 and 6"),
        ("classify_with_labels", dict(labels, class_names=["a", " "]), "class_names[1] is blank"),
        ("classify_with_labels", dict(labels, templates=["{c}", "no placeholder"]),
         "templates[1] has no {c}"),
        ("classify_with_labels", dict(labels, templates=[]), "templates has 0 entries"),
        ("classify_with_labels", dict(labels, class_names=list("abcde"), templates=["{c}"] * 3),
         "5 class_names x 3 templates = 15 prompts; at most 12"),
    ]


def _request(signature, **inputs):
    return {"signature": signature, "inputs": {k: b64_list(v) for k, v in inputs.items()}}


def good_requests(images):
    batch = [images[n][0] for n in IMAGE_NAMES]
    return {
        "classify": _request("classify", images=batch),
        "serving_default": _request("serving_default", images=batch),
        "labels_baked": _request("classify_with_labels", images=batch, class_names=CLASS_NAMES,
                                 templates=TEMPLATES),
        "labels_other": _request("classify_with_labels", images=batch, class_names=OTHER_NAMES,
                                 templates=OTHER_TEMPLATES),
        "embed_image": _request("embed_image", images=batch),
        "embed_text": _request("embed_text", texts=TEXTS),
    }


def check_outputs(results, reference):
    """Every good request's outputs against the reference (results as from the fresh process)."""
    probs, ids = reference["probs"], reference["top_ids"]
    classify = results["classify"]
    np.testing.assert_array_equal(classify["class_ids"], ids)
    assert classify["classes"] == [[CLASS_NAMES[i] for i in row] for row in ids]
    np.testing.assert_allclose(classify["scores"], np.take_along_axis(probs, ids, -1), atol=TOL)
    assert results["serving_default"] == classify
    baked = np.asarray(results["labels_baked"]["scores"])
    np.testing.assert_allclose(baked, probs, atol=TOL)
    # classify_with_labels with the baked names and templates = classify's scores.
    np.testing.assert_allclose(np.take_along_axis(baked, ids, -1), classify["scores"], atol=TOL)
    np.testing.assert_allclose(results["labels_other"]["scores"], reference["other"], atol=TOL)
    np.testing.assert_allclose(results["embed_image"]["embeddings"], reference["image"], atol=TOL)
    np.testing.assert_allclose(results["embed_text"]["embeddings"], reference["text"], atol=TOL)


def check_bad(bad_results, cases):
    assert len(bad_results) == len(cases)
    for (signature, _, expected), got in zip(cases, bad_results):
        assert got["error_type"] == "InvalidArgumentError", (signature, expected, got)
        assert expected in got["message"], (expected, got["message"])
        assert got["probe_ok"], f"after the bad {signature} request ({expected}) the next good " \
                                "request did not return the same outputs"


@pytest.mark.slow  # a fresh Python process loads the export
def test_fresh_process_tf2_and_tf1_loaders_match_keras(exported, images, reference, tmp_path):
    png = images["rgb0"][0]
    cases = bad_requests(png)
    batch = [images[n][0] for n in IMAGE_NAMES]
    spec = {"dir": exported, "requests": good_requests(images), "probe": "classify",
            # TF Serving and the TF1 loader fill a missing input from the SignatureDef default.
            "tf1_requests": {"labels_default": _request("classify_with_labels", images=batch,
                                                        class_names=CLASS_NAMES)},
            "bad": [_request(sig, **inputs) for sig, inputs, _ in cases]}
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "export_fresh_process.py"),
                           str(spec_path), str(result_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(result_path.read_text())

    assert result["imported_basic_tf"] == []
    expected_signatures = ["classify", "classify_with_labels", "embed_image", "embed_text",
                           "serving_default"]
    assert result["tf2_signatures"] == expected_signatures
    assert [s for s in result["tf1_signatures"] if not s.startswith("__")] == expected_signatures
    check_outputs(result["tf2"], reference)
    check_outputs(result["tf1"], reference)
    np.testing.assert_allclose(result["tf1"]["labels_default"]["scores"], reference["probs"],
                               atol=TOL)
    check_bad(result["tf2_bad"], cases)
    check_bad(result["tf1_bad"], cases)


@pytest.mark.slow  # runs tools/saved_model_cli.py in a subprocess
def test_wrapped_saved_model_cli_run_matches_keras(exported, images, reference, repo_root,
                                                   tmp_path):
    """`tools/saved_model_cli.py run` (the TF1 session loader) on classify_with_labels, the
    signature that uses every part: image decoding, in-graph tokenization and the default input
    (templates omitted, so the SignatureDef default, the baked templates, is used). The fresh
    process test runs every signature through the same loader."""
    batch = np.array([images[n][0] for n in IMAGE_NAMES], dtype=object)
    np.save(tmp_path / "images.npy", batch, allow_pickle=True)
    np.save(tmp_path / "class_names.npy",
            np.array([c.encode() for c in CLASS_NAMES], dtype=object), allow_pickle=True)
    proc = subprocess.run(
        [sys.executable, os.path.join(repo_root, "tools", "saved_model_cli.py"), "run",
         "--dir", exported, "--tag_set", "serve", "--signature_def", "classify_with_labels",
         "--inputs", f"images={tmp_path}/images.npy;class_names={tmp_path}/class_names.npy",
         "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = np.load(tmp_path / "out" / "scores.npy")
    np.testing.assert_allclose(scores, reference["probs"], atol=TOL)


def test_signature_defs_assets_and_models_config(exported, tokenizer):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    signatures = saved_model.meta_graphs[0].signature_def
    inputs = {"classify": ["images"],
              "classify_with_labels": ["class_names", "images", "templates"],
              "embed_image": ["images"], "embed_text": ["texts"], "serving_default": ["images"]}
    outputs = {"classify": ["class_ids", "classes", "scores"], "classify_with_labels": ["scores"],
               "embed_image": ["embeddings"], "embed_text": ["embeddings"],
               "serving_default": ["class_ids", "classes", "scores"]}
    for name, input_names in inputs.items():
        sig = signatures[name]
        assert sig.method_name == "tensorflow/serving/predict"
        assert sorted(sig.inputs) == input_names
        assert sorted(sig.outputs) == outputs[name]
        for info in sig.inputs.values():   # DT_STRING [-1]: raw bytes / text of any batch size
            assert info.dtype == 7 and [d.size for d in info.tensor_shape.dim] == [-1]
    defaults = signatures["classify_with_labels"].defaults
    assert list(defaults) == ["templates"]
    for name, row in SIGNATURES.items():   # the clients' table is what was exported
        sig = signatures[name]
        assert (sorted(sig.inputs), sorted(sig.defaults)) == (sorted(row.inputs),
                                                             sorted(row.optional))
        assert {k: v.dtype for k, v in sig.outputs.items()} == {
            k: tf.as_dtype(tf.string if kind is str else kind).as_datatype_enum
            for k, kind in row.outputs.items()}
    assert [s.decode() for s in defaults["templates"].string_val] == TEMPLATES

    assets = os.path.join(exported, "assets")
    with open(os.path.join(assets, "tokenizer.model"), "rb") as f:
        assert f.read() == tokenizer.model_proto
    with open(os.path.join(assets, "class_names.json"), encoding="utf-8") as f:
        assert json.load(f) == CLASS_NAMES
    with open(os.path.join(assets, "templates.json"), encoding="utf-8") as f:
        assert json.load(f) == TEMPLATES
    with open(os.path.join(assets, "operative_config.gin")) as f:
        operative = f.read()
    for binding in ["dual_encoder_config.embed_dim = 32", "serving_limits.max_prompts = 12"]:
        assert binding in operative
    with open(os.path.join(assets, "serving.json")) as f:
        info = json.load(f)
    assert info["limits"] == LIMITS and info["top_k"] == TOP_K and info["image_size"] == 32
    assert info["optional_inputs"] == {"classify_with_labels": ["templates"]}
    assert info["seq_len"] == SEQ_LEN   # the tool took make_dataset.seq_len from gin

    from tensorflow_serving.config import model_server_config_pb2
    export_dir, version = os.path.split(os.path.dirname(exported))[0], os.path.basename(exported)
    assert version == "1"
    config = model_server_config_pb2.ModelServerConfig()
    with open(os.path.join(export_dir, "models.config")) as f:
        text_format.Parse(f.read(), config)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "tiny", os.path.join(export_dir, "tiny"), "tensorflow")
