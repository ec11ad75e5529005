"""The clients end to end over the real export: REST and gRPC against a Python stand-in for TF
Serving's Predict (export_emulator.py, 127.0.0.1 only), and against a real
tensorflow_model_server when one is on PATH (skipped otherwise: none can be installed here)."""
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from basic_tf.export import client
from export_emulator import PredictEmulator, start_grpc, start_rest
from export_helpers import (CLASS_NAMES, IMAGE_NAMES, OTHER_NAMES, OTHER_TEMPLATES, TEXTS, TOL)


@pytest.fixture(scope="module")
def emulator(exported):
    return PredictEmulator(exported, "tiny", 1)


@pytest.fixture(scope="module", params=["rest", "grpc"])
def serving_client(request, emulator):
    if request.param == "rest":
        server, address = start_rest(emulator)
        yield client.RestClient(address, "tiny", version=1)
        server.shutdown()
        server.server_close()
    else:
        server, address = start_grpc(emulator)
        grpc_client = client.GrpcClient(address, "tiny")
        yield grpc_client
        grpc_client.close()
        server.stop(None)


def check_every_signature(serving_client, images, reference):
    batch = [images[n][0] for n in IMAGE_NAMES]
    probs, ids = reference["probs"], reference["top_ids"]
    out = serving_client.classify(batch)
    np.testing.assert_array_equal(out["class_ids"], ids)
    assert out["classes"].tolist() == [[CLASS_NAMES[i] for i in row] for row in ids]
    np.testing.assert_allclose(out["scores"], np.take_along_axis(probs, ids, -1), atol=TOL)
    # templates left out of the request: the server uses the SignatureDef default.
    labels = serving_client.classify_with_labels(batch, CLASS_NAMES)
    np.testing.assert_allclose(labels["scores"], probs, atol=TOL)
    other = serving_client.classify_with_labels(batch, OTHER_NAMES, OTHER_TEMPLATES)
    np.testing.assert_allclose(other["scores"], reference["other"], atol=TOL)
    np.testing.assert_allclose(serving_client.embed_image(batch), reference["image"], atol=TOL)
    np.testing.assert_allclose(serving_client.embed_text(TEXTS), reference["text"], atol=TOL)


def check_bad_request_then_good(serving_client, images, invalid_code):
    png = images["rgb0"][0]
    with pytest.raises(client.ServingError) as info:
        serving_client.classify([png, b"hello"])
    assert info.value.code == invalid_code
    assert "classify: images[1] is not a JPEG or PNG file" in info.value.message
    with pytest.raises(client.ServingError) as info:
        serving_client.classify_with_labels([png], ["boot"], ["no placeholder"])
    assert "templates[0] has no {c}" in info.value.message
    assert serving_client.classify([png])["classes"].shape == (1, 3)


def test_every_signature_through_the_client(serving_client, images, reference):
    check_every_signature(serving_client, images, reference)


def test_bad_request_is_reported_and_the_next_one_answers(serving_client, images):
    invalid = 400 if isinstance(serving_client, client.RestClient) else "INVALID_ARGUMENT"
    check_bad_request_then_good(serving_client, images, invalid)


def test_live_tensorflow_model_server(exported, images, reference, tmp_path):
    """The real server, when installed: gRPC over a UNIX socket, the server in an empty network
    namespace (its --port listener binds 0.0.0.0, which must not reach any network)."""
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (TF Serving has no package this "
                    "machine can install); the emulator tests above cover the client")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot confine the server's 0.0.0.0 gRPC port: `unshare --net` is refused")
    socket_path = str(tmp_path / "tfs.sock")
    config = os.path.join(os.path.dirname(os.path.dirname(exported)), "models.config")
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(["unshare", "--net", binary, "--port=8500", "--rest_api_port=0",
                               f"--grpc_socket_path={socket_path}",
                               f"--model_config_file={config}"], stdout=log, stderr=log)
    try:
        grpc_client = client.GrpcClient(f"unix:{socket_path}", "tiny", timeout=10)
        deadline = time.time() + 120
        while True:
            try:
                grpc_client.classify([images["rgb0"][0]])
                break
            except client.ServingError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
                time.sleep(1)
        check_every_signature(grpc_client, images, reference)
        check_bad_request_then_good(grpc_client, images, "INVALID_ARGUMENT")
        grpc_client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
