"""tritonclient.http with its default settings sends binary tensor data (the
Inference-Header-Content-Length extension), which MLServer and the pipeline gateway do not
read: Envoy answers a clear OIP 400 that says what to change, and with binary_data=False the
same client gets its answer (real Envoy, real MLServer)."""

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.conftest import IRIS_CLASS, PROBE_INPUT


def _client_and_input(env, binary: bool):
    client = thttp.InferenceServerClient(env.url.removeprefix("http://"))
    tensor = thttp.InferInput("predict", [1, len(PROBE_INPUT)], "FP32")
    tensor.set_data_from_numpy(np.array([PROBE_INPUT], dtype=np.float32), binary_data=binary)
    return client, tensor


def test_default_binary_tensors_get_a_clear_400(iris_env):
    client, tensor = _client_and_input(iris_env, binary=True)
    with pytest.raises(InferenceServerException) as e:
        client.infer("iris", [tensor])
    assert e.value.status() == "400"
    assert "binary_data=False" in e.value.message(), e.value.message()


def test_the_refusal_is_an_oip_json_error(iris_env):
    body = json.dumps({"inputs": [{"name": "predict", "datatype": "FP32",
                                   "shape": [1, 4], "parameters": {"binary_data_size": 16}}]})
    req = urllib.request.Request(
        f"{iris_env.url}/v2/models/iris/infer", data=body.encode() + b"\x00" * 16,
        headers={"content-type": "application/octet-stream",
                 "inference-header-content-length": str(len(body))})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    assert e.value.headers["content-type"] == "application/json"
    assert "not supported on REST" in json.loads(e.value.read())["error"]


def test_json_tensors_from_tritonclient_are_answered(iris_env):
    client, tensor = _client_and_input(iris_env, binary=False)
    output = thttp.InferRequestedOutput("predict", binary_data=False)
    result = client.infer("iris", [tensor], outputs=[output])
    assert result.as_numpy("predict").ravel().tolist() == [IRIS_CLASS]
