"""Runs an export in a fresh process that imports only TensorFlow and TF Text (what a consumer has).

Usage: python3 export_fresh_process.py <spec.json> <result.json>

spec: {"dir": version dir, "requests": {name: {"signature": s, "inputs": {input: [base64]}}},
       "tf1_requests": {...} (run only in the TF1 session, e.g. relying on input defaults),
       "bad": [{"signature": s, "inputs": {...}}], "probe": name of a request}
It loads the SavedModel twice: with TF2's tf.saved_model.load and with the TF1 session loader
(the kind of loader TF Serving uses, one Session kept across requests as a server does). In each
it runs the requests, then every bad request followed by the probe request (does the model still
answer, with the same numbers?). Results go to result.json; nothing here imports basic_tf.
"""
import base64
import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the graph uses)


def _decode_inputs(inputs):
    return {name: np.array([base64.b64decode(v) for v in values], dtype=object)
            for name, values in inputs.items()}


def _jsonable(outputs):
    result = {}
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
        result[name] = value.tolist()
    return result


def _run_all(run, spec, requests):
    results = {name: _jsonable(run(r["signature"], _decode_inputs(r["inputs"])))
               for name, r in requests.items()}
    probe = spec["requests"][spec["probe"]]
    expected = _jsonable(run(probe["signature"], _decode_inputs(probe["inputs"])))
    bad_results = []
    for bad in spec["bad"]:
        entry = {"error_type": None, "message": None}
        try:
            run(bad["signature"], _decode_inputs(bad["inputs"]))
        except tf.errors.OpError as error:
            entry = {"error_type": type(error).__name__, "message": error.message}
        probe_outputs = _jsonable(run(probe["signature"], _decode_inputs(probe["inputs"])))
        entry["probe_ok"] = probe_outputs == expected
        bad_results.append(entry)
    return results, bad_results


def main(spec_path, result_path):
    with open(spec_path) as f:
        spec = json.load(f)
    result = {}

    loaded = tf.saved_model.load(spec["dir"])
    result["tf2_signatures"] = sorted(loaded.signatures)

    def run_tf2(signature, inputs):
        outputs = loaded.signatures[signature](**{k: tf.constant(v, tf.string)
                                                  for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    result["tf2"], result["tf2_bad"] = _run_all(run_tf2, spec, spec["requests"])

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], spec["dir"])
        signatures = meta_graph.signature_def
        result["tf1_signatures"] = sorted(signatures)

        def run_tf1(signature, inputs):
            sig = signatures[signature]
            feed = {sig.inputs[k].name: v for k, v in inputs.items()}
            fetch = {k: v.name for k, v in sig.outputs.items()}
            return session.run(fetch, feed_dict=feed)

        requests = dict(spec["requests"], **spec.get("tf1_requests", {}))
        result["tf1"], result["tf1_bad"] = _run_all(run_tf1, spec, requests)

    result["imported_basic_tf"] = sorted(m for m in sys.modules if m.startswith("basic_tf"))
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
