"""The name hook inside a real MLServer: with `seldon-internal-model` a request reaches that
model and shows the user's name; without it MLServer behaves as stock."""

import json

import grpc
import httpx
import pytest

from runtime.agent import modelsettings
from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc as pb_grpc
from runtime.specs.model import ModelSpec

from .conftest import PROBE, PROBE_CLASS, ModelServer

HEADER = {"seldon-internal-model": "iris_1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, iris_artifact):
    """MLServer holding the iris sample as `iris_1`."""
    server = ModelServer(tmp_path_factory.mktemp("namehook")).start()
    try:  # stopped even when the load fails
        spec = ModelSpec(storageUri=str(iris_artifact), requirements=["sklearn"])
        modelsettings.write_model(server.repository, "iris_1", spec, iris_artifact,
                                  {"name": "iris", "version": 1, "memory": 0})
        httpx.post(f"{server.url}/v2/repository/models/iris_1/load",
                   timeout=120).raise_for_status()
        yield server
    finally:
        server.service.stop()


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def probe(model: str) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1, 4],
        contents=pb.InferTensorContents(fp32_contents=PROBE["inputs"][0]["data"]))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def test_rest_infer_with_header_reaches_internal_and_answers_like_seldon(served):
    r = httpx.post(f"{served.url}/v2/models/iris/infer", json=PROBE, headers=HEADER)
    assert r.status_code == 200, r.text
    # Seldon Core 2 answers with the version that served: "model_name":"iris_1","model_version":"1"
    assert (r.json()["model_name"], r.json()["model_version"]) == ("iris_1", "1")
    assert r.json()["outputs"][0]["data"] == [PROBE_CLASS]


def test_rest_metadata_and_ready_with_header(served):
    r = httpx.get(f"{served.url}/v2/models/iris", headers=HEADER)
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["versions"]) == ("iris_1", ["1"])
    assert httpx.get(f"{served.url}/v2/models/iris/ready", headers=HEADER).status_code == 200


def test_rest_without_header_is_stock(served):
    r = httpx.post(f"{served.url}/v2/models/iris/infer", json=PROBE)
    assert r.status_code == 404 and r.json() == {"error": "Model iris not found"}
    r = httpx.post(f"{served.url}/v2/models/iris_1/infer", json=PROBE)
    assert r.status_code == 200 and r.json()["model_name"] == "iris_1"
    assert httpx.get(f"{served.url}/v2/models/iris_1").json()["name"] == "iris_1"


def test_rest_errors_do_not_leak_internal_names(served):
    r = httpx.get(f"{served.url}/v2/models/iris", headers={"seldon-internal-model": "iris_9"})
    assert r.status_code == 404 and r.json() == {"error": "Model iris not found"}


def tensor(shape, datatype, data):
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("body, says", [
    (tensor([1, 4], "FP32", [1, 2]), "cannot reshape"),
    (tensor([1, 3], "FP32", [1, 2, 3]), "3 features"),
    (tensor([1, 4], "FP32", [1, 2, 3, "x"]), "could not convert"),
    ({"inputs": 5}, "inputs: Input should be a valid list"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
     "datatype: Field required"),
    ("{bad", "malformed JSON"),
])
def test_rest_bad_input_is_400_with_oip_error(served, body, says):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(f"{served.url}/v2/models/iris/infer", content=content,
                   headers={**HEADER, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert says in r.json()["error"] and "iris_1" not in r.text


def test_rest_bad_input_without_header_is_stock(served):
    r = httpx.post(f"{served.url}/v2/models/iris_1/infer", json={"inputs": 5})
    assert r.status_code == 422 and "detail" in r.json()


def test_grpc_bad_input_is_invalid_argument(stub):
    request = probe("iris")
    del request.inputs[0].contents.fp32_contents[2:]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=[("seldon-internal-model", "iris_1")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "iris_1" not in err.value.details()


def test_grpc_infer_metadata_ready_with_header(stub):
    md = [("seldon-internal-model", "iris_1")]
    response = stub.ModelInfer(probe("iris"), metadata=md)
    assert (response.model_name, response.model_version) == ("iris_1", "1")
    assert list(response.outputs[0].contents.int64_contents) == [PROBE_CLASS]
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), metadata=md)
    assert (metadata.name, list(metadata.versions)) == ("iris_1", ["1"])
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris"), metadata=md).ready


def test_grpc_without_header_is_stock(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(probe("iris"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.ModelInfer(probe("iris_1")).model_name == "iris_1"


def test_usage_records_last_inference(served):
    before = httpx.get(f"{served.url}/core2/usage").json().get("iris_1", 0)
    httpx.post(f"{served.url}/v2/models/iris/infer", json=PROBE, headers=HEADER)
    assert httpx.get(f"{served.url}/core2/usage").json()["iris_1"] > before
