"""Clients for the exported signatures on TF Serving: REST (JSON) and gRPC (PredictRequest).

REST (TF Serving's RESTful API, Predict): POST
`http://<host>:<port>/v1/models/<name>[/versions/<v>]:predict` with a JSON body in columnar form,
`{"signature_name": ..., "inputs": {"images": [{"b64": "<base64>"}, ...], "class_names": [...]}}`
(columnar because classify_with_labels' inputs have different lengths; the row form
`{"instances": [...]}` is available for one-input signatures). Binary strings (image files, and
any text that is not valid UTF-8) travel base64-encoded in `{"b64": ...}` objects, as the API
documents. A response is `{"outputs": {<name>: nested lists}}`, or `{"outputs": <nested lists>}`
when the signature has a single output; an error is `{"error": "<message>"}`.

gRPC: `tensorflow.serving.PredictionService/Predict` with a `PredictRequest` (model_spec name,
signature_name, optional version; inputs as DT_STRING `TensorProto`s of shape [N] holding
`string_val`, exactly what `tf.make_tensor_proto` builds). Needs `tensorflow-serving-api`
(imported only when a gRPC function is used).

classify_with_labels' `templates` is optional: TF Serving fills an input missing from the request
with the SignatureDef's default (the templates baked at export time).
"""
import base64
import json
import urllib.error
import urllib.request
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from basic_tf.export.signature_table import BINARY_INPUTS, signature


Strings = Sequence[Union[bytes, str]]


class ServingError(RuntimeError):
    """The server refused a request; `code` is the HTTP status or gRPC status name."""

    def __init__(self, code, message: str):
        super().__init__(f"[{code}] {message}")
        self.code, self.message = code, message


def check_inputs(signature_name: str, inputs: Mapping[str, Strings]) -> Dict[str, list]:
    """Validates input names against the signature; returns {name: list of bytes}."""
    row = signature(signature_name)
    expected = row.inputs
    required = [n for n in expected if n not in row.optional]
    inputs = {name: values for name, values in inputs.items() if values is not None}
    unknown = sorted(set(inputs) - set(expected))
    missing = [n for n in required if n not in inputs]
    if unknown or missing:
        raise ValueError(f"signature {signature_name!r} takes inputs {list(expected)} (optional: "
                         f"{list(row.optional)}); unknown: {unknown}, "
                         f"missing: {missing}")
    out = {}
    for name in expected:
        if name not in inputs:
            continue
        values = inputs[name]
        if isinstance(values, (bytes, str)):
            raise TypeError(f"input {name!r} must be a list of strings, got one {type(values)}")
        out[name] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        if name in BINARY_INPUTS and any(isinstance(v, str) for v in values):
            raise TypeError(f"input {name!r} holds encoded image files: pass bytes, not str")
    return out


# ----------------------------------------------------------------------------------------- REST

def predict_url(server: str, model_name: str, version: Optional[int] = None) -> str:
    """`http://<server>/v1/models/<model_name>[/versions/<version>]:predict`."""
    base = server if "://" in server else f"http://{server}"
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version else "")
    return base.rstrip("/") + path + ":predict"


def _json_string(value: bytes, binary: bool):
    """A DT_STRING element in REST JSON: plain text, or {"b64": ...} for binary data."""
    if not binary:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def rest_request_body(signature_name: str, inputs: Mapping[str, Strings],
                      row_format: bool = False) -> bytes:
    """The JSON body of a Predict request (UTF-8 bytes).

    Columnar: {"signature_name": s, "inputs": {name: [values]}}. Row (`row_format=True`, only
    for one-input signatures): {"signature_name": s, "instances": [values]}.
    """
    inputs = check_inputs(signature_name, inputs)
    columns = {name: [_json_string(v, name in BINARY_INPUTS) for v in values]
               for name, values in inputs.items()}
    body = {"signature_name": signature_name}
    if row_format:
        if len(columns) != 1:
            raise ValueError(f"row format needs a one-input signature; {signature_name!r} gets "
                             f"{sorted(columns)}: use the columnar format")
        body["instances"] = next(iter(columns.values()))
    else:
        body["inputs"] = columns
    return json.dumps(body).encode("utf-8")


def _to_array(values, kind) -> np.ndarray:
    if kind is str:
        return np.array(values, dtype=object)
    return np.asarray(values, dtype=kind)


def rest_response_outputs(signature_name: str, body: Union[bytes, str]) -> Dict[str, np.ndarray]:
    """Parses a Predict response body into {output name: numpy array}; raises ServingError."""
    payload = json.loads(body)
    if "error" in payload:
        raise ServingError("error", payload["error"])
    kinds = signature(signature_name).outputs
    if "outputs" in payload:
        outputs = payload["outputs"]
        if not isinstance(outputs, dict):   # a single output is sent without its name
            outputs = {next(iter(kinds)): outputs}
    elif "predictions" in payload:
        rows = payload["predictions"]
        if rows and isinstance(rows[0], dict):
            outputs = {name: [row[name] for row in rows] for name in rows[0]}
        else:
            outputs = {next(iter(kinds)): rows}
    else:
        raise ServingError("format", f"response has neither outputs nor predictions: "
                           f"{sorted(payload)}")
    return {name: _to_array(values, kinds.get(name, np.float32))
            for name, values in outputs.items()}


# ----------------------------------------------------------------------------------------- gRPC

def string_tensor_proto(values: Sequence[bytes]):
    """tf.string [N] TensorProto: dtype DT_STRING, shape [N], string_val (no TF op needed)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                  string_val=list(values))


def grpc_predict_request(model_name: str, signature_name: str, inputs: Mapping[str, Strings],
                         version: Optional[int] = None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for one signature."""
    from tensorflow_serving.apis import predict_pb2
    inputs = check_inputs(signature_name, inputs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version:
        request.model_spec.version.value = int(version)
    for name, values in inputs.items():
        request.inputs[name].CopyFrom(string_tensor_proto(values))
    return request


def tensor_proto_to_numpy(proto) -> np.ndarray:
    """TensorProto (DT_FLOAT, DT_INT32, DT_INT64 or DT_STRING) -> numpy array.

    Reads the typed *_val fields (what TF Serving's Predict sends) or tensor_content; a single
    value for a larger shape is broadcast, as in TensorFlow's own reader.
    """
    from tensorflow.core.framework import types_pb2
    shape = [d.size for d in proto.tensor_shape.dim]
    kinds = {types_pb2.DT_FLOAT: (np.float32, "float_val"),
             types_pb2.DT_INT32: (np.int32, "int_val"),
             types_pb2.DT_INT64: (np.int64, "int64_val"),
             types_pb2.DT_STRING: (object, "string_val")}
    if proto.dtype not in kinds:
        raise ValueError(f"tensor dtype {types_pb2.DataType.Name(proto.dtype)} not handled; "
                         "the exported signatures output float32, int32 and string")
    dtype, field = kinds[proto.dtype]
    size = int(np.prod(shape)) if shape else 1
    if proto.tensor_content and dtype is not object:
        flat = np.frombuffer(proto.tensor_content, dtype=dtype).copy()
    else:
        flat = np.array(list(getattr(proto, field)), dtype=dtype)
        if flat.size == 1 and size > 1:
            flat = np.full(size, flat[0], dtype=dtype)
    return flat.reshape(shape)


def grpc_response_outputs(signature_name: str, response) -> Dict[str, np.ndarray]:
    """PredictResponse -> {output name: numpy array}; strings as str (UTF-8)."""
    kinds = signature(signature_name).outputs
    outputs = {}
    for name, proto in response.outputs.items():
        array = tensor_proto_to_numpy(proto)
        if kinds.get(name) is str:
            array = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)
        outputs[name] = array
    return outputs


# -------------------------------------------------------------------------------------- clients

class _Client:
    """Signature helpers shared by the REST and gRPC clients (subclasses define `predict`)."""

    def predict(self, signature_name: str, inputs: Mapping[str, Strings]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def classify(self, images: Sequence[bytes]) -> Dict[str, np.ndarray]:
        """Top-k baked classes: classes str [N, k], scores float32 [N, k], class_ids int32."""
        return self.predict("classify", {"images": images})

    def classify_with_labels(self, images: Sequence[bytes], class_names: Strings,
                             templates: Optional[Strings] = None) -> Dict[str, np.ndarray]:
        """scores float32 [N, C] over the given class names (templates: default baked)."""
        return self.predict("classify_with_labels", {"images": images, "class_names": class_names,
                                                     "templates": templates})

    def embed_image(self, images: Sequence[bytes]) -> np.ndarray:
        """float32 [N, D] unit-norm image embeddings."""
        return self.predict("embed_image", {"images": images})["embeddings"]

    def embed_text(self, texts: Strings) -> np.ndarray:
        """float32 [N, D] unit-norm text embeddings."""
        return self.predict("embed_text", {"texts": texts})["embeddings"]


class RestClient(_Client):
    """TF Serving REST client. server: "host:port" of --rest_api_port (default port 8501)."""

    def __init__(self, server: str, model_name: str, version: Optional[int] = None,
                 timeout: float = 30.0):
        self.url = predict_url(server, model_name, version)
        self.timeout = timeout

    def predict(self, signature_name, inputs):
        request = urllib.request.Request(
            self.url, data=rest_request_body(signature_name, inputs),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise ServingError(error.code, message) from None
        return rest_response_outputs(signature_name, body)


class GrpcClient(_Client):
    """TF Serving gRPC client. server: "host:port" of --port (default port 8500)."""

    def __init__(self, server: str, model_name: str, version: Optional[int] = None,
                 timeout: float = 30.0, max_message_bytes: int = 64 << 20):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        self._grpc = grpc
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self._channel = grpc.insecure_channel(server, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict(self, signature_name, inputs):
        request = grpc_predict_request(self.model_name, signature_name, inputs, self.version)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as error:
            raise ServingError(error.code().name, error.details()) from None
        return grpc_response_outputs(signature_name, response)

    def close(self) -> None:
        self._channel.close()
