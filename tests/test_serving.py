"""A model served through Envoy with the Open Inference Protocol, REST and gRPC."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc

from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc
from tests.conftest import IRIS_CLASS, PROBE_INPUT


def test_rest_inference_through_envoy(iris_env):
    status, body, headers = iris_env.infer("iris")
    assert status == 200
    assert body["outputs"][0]["data"] == [IRIS_CLASS]
    # As Seldon Core 2 answers: the version that served, by its name in the server, and number
    assert (body["model_name"], body["model_version"]) == ("iris_1", "1")
    assert headers.get("x-request-id")


def test_model_metadata_names_the_version_the_server_holds(iris_env):
    with urllib.request.urlopen(f"{iris_env.url}/v2/models/iris", timeout=30) as r:
        metadata = json.loads(r.read())
    # Seldon: {"name": "tfsimple1_1", "versions": ["1"], "platform": ..., "inputs": [...]}
    assert (metadata["name"], metadata["versions"]) == ("iris_1", ["1"])
    assert {"platform", "inputs", "outputs"} <= set(metadata)


def test_seldon_model_header_routes_rest(iris_env):
    status, body, _ = iris_env.infer("ignored", headers={"seldon-model": "iris"},
                                     path="/v2/models/iris/infer")
    assert status == 200 and body["outputs"][0]["data"] == [IRIS_CLASS]


def test_grpc_inference_through_envoy(iris_env):
    address = iris_env.url.removeprefix("http://")
    request = pb.ModelInferRequest(model_name="iris", inputs=[
        pb.ModelInferRequest.InferInputTensor(
            name="predict", datatype="FP32", shape=[1, 4],
            contents=pb.InferTensorContents(fp32_contents=PROBE_INPUT))])
    with grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=[("seldon-model", "iris")], timeout=30)
        ready = stub.ModelReady(pb.ModelReadyRequest(name="iris"),
                                metadata=[("seldon-model", "iris")], timeout=30)
    assert (response.model_name, response.model_version) == ("iris_1", "1")
    assert list(response.outputs[0].contents.int64_contents) == [IRIS_CLASS]
    assert ready.ready


def test_tritonclient_http_and_grpc(iris_env):
    # tritonclient registers its own `inference` protobuf package: run it in its own process.
    script = Path(__file__).parent / "clients" / "triton_check.py"
    out = subprocess.run([sys.executable, str(script), iris_env.url, "iris"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"http": [IRIS_CLASS], "grpc": [IRIS_CLASS]}


def test_model_list_and_server_status(iris_env):
    [model] = iris_env.scheduler.status("Model")
    assert (model.name, model.state, model.version) == ("iris", "ModelAvailable", 1)
    [server] = iris_env.scheduler.status("Server")
    detail = json.loads(server.detail_json)
    assert server.ready and detail["replicas"][0]["models"] == ["iris_1"]
