"""The whole path on the local platform: Envoy -> pipeline gateway -> Kafka -> engine
-> model gateway -> Envoy -> MLServer, with pipelines loaded through the real scheduler."""

import json

import grpc
import httpx
import pytest

from runtime.broker import BROKER_KINDS
from runtime.specs.manifest import load_file
from tests.dataflow.conftest import ROOT, outputs_of, tensor


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_pipelines_through_envoy_and_the_scheduler(make_env, kind):
    """`core2 up` and `core2 up --kafka apache` (the services' fetch wait follows the kind)."""
    env = make_env(pipelines=True, kafkaBroker=kind)
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        env.scheduler.apply_resource(r)
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        env.scheduler.wait("Model", r.name, timeout=90)
    for f in ("chain.yaml", "fragile.yaml"):
        for r in load_file(ROOT / "samples/pipelines" / f):
            env.scheduler.apply_resource(r)
            assert env.scheduler.wait("Pipeline", r.name, timeout=90).state == "PipelineReady"

    x = [tensor("x", [1.0, 2.0])]
    first = httpx.post(f"{env.url}/v2/models/add10/infer", json={"inputs": x}).json()
    by_hand = httpx.post(f"{env.url}/v2/models/mul10/infer",
                         json={"inputs": first["outputs"]}).json()["outputs"][0]["data"]
    r = httpx.post(f"{env.url}/v2/pipelines/chain/infer", json={"inputs": x}, timeout=30)
    assert outputs_of(r) == {"OUTPUT": by_hand} == {"OUTPUT": [110.0, 120.0]}
    assert r.headers["x-pipeline-version"] == "1" and r.headers["x-request-id"]
    r = httpx.post(f"{env.url}/v2/models/chain/infer", json={"inputs": x}, timeout=30,
                   headers={"seldon-model": "chain.pipeline"})
    assert outputs_of(r) == {"OUTPUT": [110.0, 120.0]}

    r = httpx.post(f"{env.url}/v2/pipelines/fragile/infer",
                   json={"inputs": [tensor("x", [-1.0])]}, timeout=30)
    assert r.status_code == 400
    assert json.loads(r.text)["error"].startswith("step checkpos (model checkpos): HTTP 400")

    # issue 10's request that killed the engine (and again on every restart), through Envoy
    crasher = b'{"inputs":[{"nam,e":"x","shape":[1],"datatype":"FP32","data":[1]}]}'
    for body, headers, error in (
            (crasher, {}, "inputs[0].name: a non-empty string is required"),
            (b'{"inputs": []}', {}, "inputs: at least one tensor is required"),
            (json.dumps({"inputs": x}).encode(), {"seldon-timeout-ms": "-1"},
             "header seldon-timeout-ms: '-1' is not a number of milliseconds")):
        r = httpx.post(f"{env.url}/v2/pipelines/chain/infer", content=body, headers=headers,
                       timeout=10)
        assert r.status_code == 400 and r.json()["error"].startswith(error), r.text
    r = httpx.post(f"{env.url}/v2/pipelines/chain/infer", json={"inputs": x}, timeout=30)
    assert outputs_of(r) == {"OUTPUT": [110.0, 120.0]}

    from runtime.pb import grpc_service_pb2 as oip
    from runtime.pb import grpc_service_pb2_grpc as oip_grpc

    with grpc.insecure_channel(env.url.removeprefix("http://")) as ch:
        req = oip.ModelInferRequest(model_name="chain")
        t = req.inputs.add(name="x", datatype="FP32", shape=[1])
        t.contents.fp32_contents.append(5.0)
        resp = oip_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
            req, metadata=[("seldon-model", "chain.pipeline")], timeout=30)
    assert list(resp.outputs[0].contents.fp32_contents) == [150.0]
