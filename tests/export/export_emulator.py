"""A Python stand-in for TF Serving's Predict API, for testing the clients end to end.

No tensorflow_model_server binary can be installed here, so this follows what the server does
for a Predict call (tensorflow_serving/servables/tensorflow/predict_util.cc and
tensorflow/cc/saved_model/util.cc): one TF1 Session over the SavedModel; the signature named in
model_spec (default "serving_default"); request inputs by alias, a missing one filled from the
SignatureDef's defaults, an unknown one refused; outputs as typed *_val fields (AsProtoField).
REST follows the RESTful API document (columnar "inputs", {"b64": ...} strings, a single output
sent without its name, errors as {"error": ...}). Both servers bind 127.0.0.1 only.
"""
import base64
import concurrent.futures
import http.server
import json
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class Status(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _as_proto_field(value: np.ndarray) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in value.shape]
    proto = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    flat = value.reshape(-1)
    if value.dtype == np.float32:
        proto.dtype = types_pb2.DT_FLOAT
        proto.float_val.extend(flat.tolist())
    elif value.dtype == np.int32:
        proto.dtype = types_pb2.DT_INT32
        proto.int_val.extend(flat.tolist())
    elif value.dtype == object:
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(flat.tolist())
    else:
        raise ValueError(f"emulator: output dtype {value.dtype} not handled")
    return proto


class PredictEmulator:
    """Predict on one served version (model_name), as TF Serving runs it."""

    def __init__(self, version_dir: str, model_name: str, version: int):
        self.model_name, self.version = model_name, version
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.load(self.session, ["serve"], version_dir)
        self.signatures = meta_graph.signature_def
        self.lock = threading.Lock()

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        if spec.name != self.model_name or (spec.HasField("version")
                                            and spec.version.value != self.version):
            raise Status(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        name = spec.signature_name or "serving_default"
        if name not in self.signatures:
            raise Status(grpc.StatusCode.FAILED_PRECONDITION,
                         f'Serving signature key "{name}" not found.')
        signature = self.signatures[name]
        extra = set(request.inputs) - set(signature.inputs)
        if extra:
            raise Status(grpc.StatusCode.INVALID_ARGUMENT, f"Sent extra: {sorted(extra)}")
        feed = {}
        for alias, info in signature.inputs.items():
            if alias in request.inputs:
                proto = request.inputs[alias]
            elif alias in signature.defaults:
                proto = signature.defaults[alias]
            else:
                raise Status(grpc.StatusCode.INVALID_ARGUMENT, f"Signature input alias: {alias} "
                             "not found in request and no default value provided.")
            feed[info.name] = tf.make_ndarray(proto)
        fetch = {alias: info.name for alias, info in signature.outputs.items()}
        try:
            with self.lock:
                outputs = self.session.run(fetch, feed_dict=feed)
        except tf.errors.OpError as error:
            raise Status(_GRPC_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN),
                         error.message) from None
        response = predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = self.model_name, name
        response.model_spec.version.value = self.version
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(_as_proto_field(np.asarray(value)))
        return response


_GRPC_CODES = {tf.errors.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
               tf.errors.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
               tf.errors.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION}
_HTTP_CODES = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.FAILED_PRECONDITION: 400}


def start_grpc(emulator: PredictEmulator):
    """(server, "127.0.0.1:<port>") serving tensorflow.serving.PredictionService/Predict."""

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
            try:
                return emulator.predict(request)
            except Status as status:
                context.abort(status.code, status.message)

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _json_to_tensor(values) -> tensor_pb2.TensorProto:
    data = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")
            for v in values]
    return tf.make_tensor_proto(np.array(data, dtype=object), shape=[len(data)])


def _tensor_to_json(proto: tensor_pb2.TensorProto):
    value = tf.make_ndarray(proto)
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value).tolist()
    return value.tolist()


def start_rest(emulator: PredictEmulator):
    """(server, "127.0.0.1:<port>") answering POST /v1/models/<name>[/versions/<v>]:predict."""
    path_pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, payload):
            body = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802 (http.server's method name)
            match = path_pattern.match(self.path)
            if not match:
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "inputs" not in body or not isinstance(body["inputs"], dict):
                return self._reply(400, {"error": "this emulator takes columnar named inputs"})
            request = predict_pb2.PredictRequest()
            request.model_spec.name = match.group(1)
            request.model_spec.signature_name = body.get("signature_name", "")
            if match.group(2):
                request.model_spec.version.value = int(match.group(2))
            for name, values in body["inputs"].items():
                request.inputs[name].CopyFrom(_json_to_tensor(values))
            try:
                response = emulator.predict(request)
            except Status as status:
                return self._reply(_HTTP_CODES.get(status.code, 500), {"error": status.message})
            outputs = {k: _tensor_to_json(v) for k, v in response.outputs.items()}
            single = len(outputs) == 1   # one output: sent without its name
            self._reply(200, {"outputs": next(iter(outputs.values())) if single else outputs})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"
