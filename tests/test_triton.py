"""A Triton server for real (the tritonserver of the nvidia-pytriton wheel, Python backend, on the
CPU): a Seldon-style Triton model is placed on it by its requirements, answers REST and gRPC
through Envoy under its own name (the agent's proxy renames requests to the version inside
Triton), names the version that served as MLServer models do, and goes when unloaded."""

import json
import urllib.request

import grpc
import numpy as np
import pytest

from runtime.local.config import LocalConfig, LocalServer
from runtime.local.platform import Platform
from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc
from runtime.specs.manifest import load_file
from tests.conftest import ROOT, Env, free_ports, wait_for

A = list(range(1, 17))
B = [1] * 16
SUM = [a + b for a, b in zip(A, B, strict=True)]
DIFF = [a - b for a, b in zip(A, B, strict=True)]


def _request(a=A, b=B, datatype="INT32") -> bytes:
    return json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": datatype, "data": a},
        {"name": "INPUT1", "shape": [1, 16], "datatype": datatype, "data": b}]}).encode()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    platform = Platform(tmp_path_factory.mktemp("triton"), LocalConfig(
        ports=free_ports(), pipelines=False,
        servers=[LocalServer(name="mlserver"),
                 LocalServer(name="triton", serverConfig="triton")])).start()
    try:
        env = Env(platform)
        [model] = load_file(str(ROOT / "samples/tfsimple.yaml"))
        spec = json.loads(model.spec_json())
        spec["storageUri"] = str(ROOT / "samples/models/tfsimple")
        env.scheduler.apply("Model", "tfsimple", json.dumps(spec))
        env.scheduler.wait("Model", "tfsimple", timeout=120)
        yield env
    finally:
        platform.stop()


def test_a_triton_model_is_placed_on_the_triton_server(env):
    [status] = env.scheduler.status("Model", "tfsimple")
    assert status.state == "ModelAvailable"
    assert status.versions[0].server == "triton"


def test_rest_inference_through_envoy(env):
    status, body, _ = env.infer("tfsimple", body=_request())
    assert status == 200, body
    out = {o["name"]: o["data"] for o in body["outputs"]}
    assert (out["OUTPUT0"], out["OUTPUT1"]) == (SUM, DIFF)
    assert (body["model_name"], body["model_version"]) == ("tfsimple_1", "1")  # as MLServer's


def test_metadata_names_the_version_and_its_tensors(env):
    with urllib.request.urlopen(f"{env.url}/v2/models/tfsimple", timeout=30) as r:
        meta = json.loads(r.read())
    assert meta["name"] == "tfsimple_1" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])]


def test_bad_input_is_the_callers_400_in_the_users_name(env):
    status, body, _ = env.infer("tfsimple", body=_request(datatype="FP32"))
    assert status == 400, body
    assert "FP32" in body["error"] and "model 'tfsimple'" in body["error"], body


def test_grpc_inference_through_envoy(env):
    request = pb.ModelInferRequest(model_name="tfsimple", inputs=[
        pb.ModelInferRequest.InferInputTensor(
            name=name, datatype="INT32", shape=[1, 16],
            contents=pb.InferTensorContents(int_contents=values))
        for name, values in (("INPUT0", A), ("INPUT1", B))])
    with grpc.insecure_channel(env.url.removeprefix("http://")) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=[("seldon-model", "tfsimple")], timeout=30)
        assert (response.model_name, response.model_version) == ("tfsimple_1", "1")
        out = {o.name: np.frombuffer(raw, dtype=np.int32).tolist()
               for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
        assert (out["OUTPUT0"], out["OUTPUT1"]) == (SUM, DIFF)
        ready = stub.ModelReady(pb.ModelReadyRequest(name="tfsimple"),
                                metadata=[("seldon-model", "tfsimple")], timeout=30)
        assert ready.ready


def test_unloaded_it_is_gone_from_envoy_and_triton(env):
    triton_http = env.platform.replicas["triton-0"]["http"]
    env.scheduler.delete("Model", "tfsimple")
    wait_for(lambda: env.infer("tfsimple", body=_request())[0] == 404, 60,
             "tfsimple to answer 404")

    def gone():
        req = urllib.request.Request(f"http://127.0.0.1:{triton_http}/v2/repository/index",
                                     data=b"{}", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return all(m.get("state") != "READY" for m in json.loads(r.read()))
    wait_for(gone, 60, "Triton to unload tfsimple_1")
