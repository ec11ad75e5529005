"""Request formats of the serving client against TF Serving's documents and protos.

REST bodies are compared byte for byte with JSON written from the RESTful API document (its
{"b64": ...} example encodes b"image bytes"); gRPC requests with the ones built the documented way
(`tf.make_tensor_proto` into `predict_pb2.PredictRequest`), serialized deterministically.
"""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from basic_tf.export import client


def test_predict_url():
    assert client.predict_url("localhost:8501", "basic") == \
        "http://localhost:8501/v1/models/basic:predict"
    assert client.predict_url("http://127.0.0.1:8501/", "fashion", 3) == \
        "http://127.0.0.1:8501/v1/models/fashion/versions/3:predict"


def test_rest_body_columnar_and_row_byte_for_byte():
    body = client.rest_request_body("classify_with_labels", {
        "images": [b"image bytes"], "class_names": ["seaside", "mountains"]})
    assert body == (b'{"signature_name": "classify_with_labels", "inputs": {"images": '
                    b'[{"b64": "aW1hZ2UgYnl0ZXM="}], "class_names": ["seaside", "mountains"]}}')
    body = client.rest_request_body("embed_text", {"texts": ["foo", b"bar", "baz"]},
                                    row_format=True)
    assert body == b'{"signature_name": "embed_text", "instances": ["foo", "bar", "baz"]}'
    # Text that is not UTF-8 can only travel base64-encoded; non-ASCII text goes as JSON text.
    body = client.rest_request_body("embed_text", {"texts": [b"\xff", "café"]})
    assert body == b'{"signature_name": "embed_text", "inputs": {"texts": [{"b64": "/w=="}, ' \
                   b'"caf\\u00e9"]}}'
    with pytest.raises(ValueError, match="row format needs a one-input signature"):
        client.rest_request_body("classify_with_labels", {"images": [b"x"], "class_names": ["a"]},
                                 row_format=True)


def test_inputs_are_checked_against_the_signature():
    with pytest.raises(ValueError, match="unknown signature 'predict'"):
        client.check_inputs("predict", {"images": [b"x"]})
    with pytest.raises(ValueError, match=r"missing: \['class_names'\]"):
        client.check_inputs("classify_with_labels", {"images": [b"x"]})
    with pytest.raises(ValueError, match=r"unknown: \['texts'\]"):
        client.check_inputs("classify", {"images": [b"x"], "texts": ["a"]})
    with pytest.raises(TypeError, match="encoded image files: pass bytes"):
        client.check_inputs("classify", {"images": ["photo.png"]})
    with pytest.raises(TypeError, match="must be a list"):
        client.check_inputs("embed_text", {"texts": "one string"})
    # templates is optional: left out (or None), the server uses the baked default.
    assert client.check_inputs("classify_with_labels", {
        "images": [b"x"], "class_names": ["a"], "templates": None}) == {
        "images": [b"x"], "class_names": [b"a"]}


def test_rest_responses_columnar_row_single_output_and_error():
    out = client.rest_response_outputs("embed_text", b'{"outputs": [[0.5, -0.5], [1.0, 0.0]]}')
    assert list(out) == ["embeddings"] and out["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(out["embeddings"], [[0.5, -0.5], [1.0, 0.0]])
    body = ('{"outputs": {"classes": [["Bag", "Coat"]], "scores": [[0.75, 0.25]], '
            '"class_ids": [[8, 4]]}}')
    out = client.rest_response_outputs("classify", body)
    assert out["classes"].tolist() == [["Bag", "Coat"]] and out["class_ids"].dtype == np.int32
    row = ('{"predictions": [{"classes": ["Bag"], "scores": [0.75], "class_ids": [8]}, '
           '{"classes": ["Coat"], "scores": [0.5], "class_ids": [4]}]}')
    out = client.rest_response_outputs("classify", row)
    assert out["classes"].tolist() == [["Bag"], ["Coat"]]
    np.testing.assert_array_equal(out["scores"], [[0.75], [0.5]])
    with pytest.raises(client.ServingError, match="images has 0 entries"):
        client.rest_response_outputs("classify", '{"error": "images has 0 entries"}')


def test_string_tensor_proto_matches_make_tensor_proto():
    values = [b"\x89PNG...", b"", "café".encode()]
    ours = client.string_tensor_proto(values)
    reference = tf.make_tensor_proto(np.array(values, dtype=object))
    assert ours.SerializeToString() == reference.SerializeToString()


def test_grpc_request_matches_the_documented_construction():
    images, names = [b"\xff\xd8\xff jpeg", b"\x89PNG png"], ["cat", "dog"]
    ours = client.grpc_predict_request("fashion", "classify_with_labels",
                                       {"images": images, "class_names": names}, version=2)
    reference = predict_pb2.PredictRequest()
    reference.model_spec.name = "fashion"
    reference.model_spec.signature_name = "classify_with_labels"
    reference.model_spec.version.value = 2
    reference.inputs["images"].CopyFrom(tf.make_tensor_proto(images, shape=[2]))
    reference.inputs["class_names"].CopyFrom(tf.make_tensor_proto(names, shape=[2]))
    assert ours.SerializeToString(deterministic=True) == \
        reference.SerializeToString(deterministic=True)
    unversioned = client.grpc_predict_request("fashion", "classify", {"images": images})
    assert not unversioned.model_spec.HasField("version")


def _field_proto(dtype, shape, **values):
    """A TensorProto with typed *_val fields, the form TF Serving's Predict answers in."""
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=dims), **values)


@pytest.mark.parametrize("proto", [
    tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3) / 7),   # tensor_content
    _field_proto(types_pb2.DT_FLOAT, [2, 2], float_val=[0.5, -1.25, 3.0, 1e-8]),
    _field_proto(types_pb2.DT_FLOAT, [2, 3], float_val=[0.25]),                # one value, filled
    _field_proto(types_pb2.DT_INT32, [1, 3], int_val=[7, 0, -2]),
    tf.make_tensor_proto(np.array([[1, 2]], np.int32)),
    _field_proto(types_pb2.DT_INT64, [2], int64_val=[2**40, -1]),
    _field_proto(types_pb2.DT_STRING, [1, 2], string_val=[b"Bag", "café".encode()]),
])
def test_tensor_proto_to_numpy_matches_make_ndarray(proto):
    ours, reference = client.tensor_proto_to_numpy(proto), tf.make_ndarray(proto)
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    np.testing.assert_array_equal(ours, reference)
