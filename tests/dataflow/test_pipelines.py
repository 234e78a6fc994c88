"""Pipelines end to end on a real Tansu broker and a real MLServer."""

import httpx

from tests.dataflow.conftest import outputs_of, tensor


def call_model(mlserver: str, model: str, inputs: list[dict]) -> list[dict]:
    r = httpx.post(f"{mlserver}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def test_chain_equals_calling_the_models_in_sequence(dataflow, mlserver):
    x = [1.5, -2.0, 3.0]
    first = call_model(mlserver, "add10", [tensor("x", x)])
    by_hand = call_model(mlserver, "mul10", first)
    r = dataflow.infer("chain", [tensor("x", x)])
    assert outputs_of(r) == {"OUTPUT": by_hand[0]["data"]} == {"OUTPUT": [115.0, 80.0, 130.0]}
    assert r.headers["x-pipeline-version"] == "1"
    assert r.headers["x-request-id"]


def test_inner_join_gets_both_sides(dataflow):
    r = dataflow.infer("join", [tensor("x", [1.0, 2.0])])
    # sum2 only accepts A and B: both sides joined and renamed by tensorMap
    assert outputs_of(r) == {"SUM": [(1 + 10) + 1 * 10, (2 + 10) + 2 * 10]}


def test_outer_join_runs_with_the_side_that_arrived(dataflow):
    r = dataflow.infer("outer-join", [tensor("x", [4.0])])
    assert outputs_of(r) == {"from_add10": [14.0]}
    r = dataflow.infer("outer-join", [tensor("x", [-4.0])])
    assert outputs_of(r) == {"from_mul10": [-40.0]}


def test_any_join_takes_the_first_side(dataflow):
    r = dataflow.infer("any-join", [tensor("x", [3.0])])
    got = outputs_of(r)
    assert len(got) == 1, got
    assert got in ({"from_add10": [13.0]}, {"from_mul10": [30.0]})


def test_trigger_gates_the_step_and_its_data_is_not_passed_on(dataflow):
    inputs = [tensor("FLAG", [1.0]), tensor("X", [7.0, 8.0])]
    assert outputs_of(dataflow.infer("trigger", inputs)) == {"X": [7.0, 8.0]}
    closed = [tensor("FLAG", [-1.0]), tensor("X", [7.0, 8.0])]
    r = dataflow.infer("trigger", closed, **{"seldon-timeout-ms": "1500"})
    assert r.status_code == 504
    assert "no response within 1.5s" in r.json()["error"]


def test_conditional_routing_runs_only_one_branch(dataflow):
    from runtime.cli.inspect import read_records

    pos = dataflow.infer("conditional", [tensor("x", [5.0])])
    neg = dataflow.infer("conditional", [tensor("x", [-5.0])])
    assert outputs_of(pos) == {"OUTPUT": [15.0]}
    assert outputs_of(neg) == {"OUTPUT": [-50.0]}
    cfg = dataflow.kafka
    for rid, ran, skipped in ((pos.headers["x-request-id"], "add10", "mul10"),
                              (neg.headers["x-request-id"], "mul10", "add10")):
        assert read_records(cfg, [cfg.model_inputs(ran)], "conditional", rid)
        assert not read_records(cfg, [cfg.model_inputs(skipped)], "conditional", rid)


def test_pipeline_to_pipeline_chaining(dataflow):
    from runtime.cli.inspect import read_records
    from runtime.procs import wait_until

    r = dataflow.infer("chain", [tensor("x", [1.0])])
    assert outputs_of(r) == {"OUTPUT": [110.0]}
    rid = r.headers["x-request-id"]
    cfg = dataflow.kafka
    found = []
    wait_until(lambda: found.extend(read_records(
        cfg, [cfg.pipeline_outputs("chain-plus")], "chain-plus", rid)) or found, 15,
        "chain-plus output for the chain request")
    assert {t["name"]: t["data"] for t in found[0].tensors()} == {"OUTPUT": [120.0]}


def test_a_pipeline_fed_by_another_pipelines_step(dataflow, scheduler):
    """`<pipeline>.step.<step>.outputs`: the engine made that step's model call, and takes its
    answer on to the other pipeline in-process (nothing reads the model's topic back)."""
    from runtime.cli.inspect import read_records
    from runtime.procs import wait_until

    scheduler.set_pipeline("tap-add10", {
        "input": {"externalInputs": ["chain.step.add10.outputs"]},
        "steps": [{"name": "mul10"}], "output": {"steps": ["mul10"]}})
    try:
        scheduler.wait_ready(["tap-add10"], timeout=60)
        r = dataflow.infer("chain", [tensor("x", [2.0])])
        assert outputs_of(r) == {"OUTPUT": [120.0]}
        rid, cfg, found = r.headers["x-request-id"], dataflow.kafka, []
        wait_until(lambda: found.extend(read_records(
            cfg, [cfg.pipeline_outputs("tap-add10")], "tap-add10", rid)) or found, 15,
            "tap-add10's output for the chain request")
        # add10's answer (12) went on to tap-add10's own mul10 call
        assert {t["name"]: t["data"] for t in found[0].tensors()} == {"OUTPUT": [120.0]}
    finally:
        scheduler.delete_pipeline("tap-add10")


def test_tensor_map_renames_inputs_and_outputs(dataflow):
    r = dataflow.infer("rename", [tensor("x", [1.0, 2.0]), tensor("y", [10.0, 20.0])])
    assert outputs_of(r) == {"total": [11.0, 22.0]}


def test_failing_step_names_the_step_and_next_request_succeeds(dataflow):
    r = dataflow.infer("fragile", [tensor("x", [-1.0])])
    assert r.status_code == 400
    assert r.json()["error"] == ("step checkpos (model checkpos): HTTP 400: "
                                 "negative values are not accepted")
    assert outputs_of(dataflow.infer("fragile", [tensor("x", [2.0])])) == {"OUTPUT": [20.0]}


def test_envoy_style_route_and_clear_errors(dataflow):
    r = httpx.post(f"{dataflow.url}/v2/models/anything/infer",
                   json={"inputs": [tensor("x", [0.0])]},
                   headers={"seldon-model": "chain.pipeline", "x-request-id": "my-id-1"})
    assert outputs_of(r) == {"OUTPUT": [100.0]}
    assert r.headers["x-request-id"] == "my-id-1"
    r = dataflow.infer("nope", [tensor("x", [0.0])])
    assert r.status_code == 404 and "pipeline 'nope' not found" in r.json()["error"]
    r = httpx.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=b"[1,2]")
    assert r.status_code == 400 and "'inputs' list" in r.json()["error"]
    assert httpx.get(f"{dataflow.url}/v2/pipelines/chain/ready").status_code == 200
    assert httpx.get(f"{dataflow.url}/v2/pipelines/nope/ready").status_code == 404
    metrics = httpx.get(f"{dataflow.url}/metrics").text
    assert 'seldon_pipeline_infer_total{code="200",method_type="rest",pipeline="chain"}' in metrics


def test_grpc_model_infer_with_seldon_model_metadata(dataflow):
    import grpc

    from runtime.pb import grpc_service_pb2 as oip
    from runtime.pb import grpc_service_pb2_grpc as oip_grpc

    with grpc.insecure_channel(f"127.0.0.1:{dataflow.grpc_port}") as ch:
        stub = oip_grpc.GRPCInferenceServiceStub(ch)
        req = oip.ModelInferRequest(model_name="chain")
        t = req.inputs.add(name="x", datatype="FP32", shape=[2])
        t.contents.fp32_contents.extend([1.0, 2.0])
        resp, call = stub.ModelInfer.with_call(
            req, metadata=[("seldon-model", "chain.pipeline")], timeout=30)
        meta = dict(call.initial_metadata())
    assert [(o.name, list(o.contents.fp32_contents)) for o in resp.outputs] == [
        ("OUTPUT", [110.0, 120.0])]
    assert meta["x-pipeline-version"] == "1" and meta["x-request-id"]


def test_thousand_concurrent_requests_each_get_their_own_answer(dataflow):
    import asyncio

    import aiohttp

    async def run():
        # 2,000 model calls: on a busy 2-core CI box they may take longer than the default
        # 30 s; correctness (every answer, each its own) is what is asserted.
        headers = {"seldon-timeout-ms": "150000"}
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=180)) as s:
            async def one(i: int):
                body = {"inputs": [tensor("x", [float(i)])]}
                async with s.post(f"{dataflow.url}/v2/pipelines/chain/infer", json=body,
                                  headers=headers) as r:
                    return i, r.status, await r.json(), r.headers.get("x-request-id")
            return await asyncio.gather(*(one(i) for i in range(1000)))

    results = asyncio.run(run())
    wrong = [(i, status, body) for i, status, body, _ in results
             if status != 200 or [o["data"] for o in body["outputs"]] != [[(i + 10.0) * 10]]]
    assert not wrong, wrong[:5]
    assert len({rid for *_, rid in results}) == 1000


TRITON_SCRIPT = """
import sys
import numpy as np
import tritonclient.grpc as triton
client = triton.InferenceServerClient(sys.argv[1])
x = triton.InferInput("x", [3], "FP32")
x.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
result = client.infer("chain", [x], headers={"seldon-model": "chain.pipeline"})
print(result.as_numpy("OUTPUT").ravel().tolist())
"""


def test_tritonclient_grpc_with_raw_contents(dataflow):
    # its own process: tritonclient's protos and runtime.pb share the `inference` package
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TRITON_SCRIPT,
                          f"127.0.0.1:{dataflow.grpc_port}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[110.0, 120.0, 130.0]"


def test_asynchronous_use_straight_on_the_topics(dataflow):
    """No gateway: produce an InferenceRequest to the pipeline's input topic, read the answer
    with the same key from its output topic."""
    import json
    import uuid

    from confluent_kafka import Producer

    from runtime.cli.inspect import read_records
    from runtime.procs import wait_until

    cfg, rid = dataflow.kafka, uuid.uuid4().hex
    producer = Producer(cfg.producer())
    producer.produce(cfg.pipeline_inputs("chain"), key=rid, headers=[("pipeline", "chain")],
                     value=json.dumps({"inputs": [tensor("x", [9.0])]}).encode())
    assert producer.flush(10) == 0
    found = []
    wait_until(lambda: found.extend(read_records(
        cfg, [cfg.pipeline_outputs("chain")], "chain", rid)) or found, 15, "the answer")
    assert {t["name"]: t["data"] for t in found[0].tensors()} == {"OUTPUT": [190.0]}
