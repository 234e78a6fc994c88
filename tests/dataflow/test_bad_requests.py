"""No poison pills: malformed requests and records get a clear 4xx / error record naming the
problem, and every dataflow service keeps running (real processes, the session's dataflow)."""

import json
import time
import uuid
from types import SimpleNamespace

import grpc
import httpx
import pytest
from confluent_kafka import Producer

from runtime.cli.inspect import read_records
from runtime.dataflow.engine import Engine
from runtime.dataflow.modelgateway import StepCall
from runtime.dataflow.plan import build_plan
from runtime.kafka import KafkaConfig
from runtime.procs import wait_until
from runtime.specs.pipeline import PipelineSpec
from tests.dataflow.conftest import outputs_of, sample_pipelines, tensor
from tests.dataflow.malformed import grpc_cases, rest_cases

CRASHER = b'{"inputs":[{"nam,e":"x","shape":[1],"datatype":"FP32","data":[1]}]}'


def assert_all_alive(dataflow) -> None:
    dead = {n: s.tail(20) for n, s in dataflow.services.items() if not s.alive()}
    assert not dead, dead


def assert_oip_error(r: httpx.Response, what: str = "") -> str:
    assert r.headers.get("content-type", "").startswith("application/json"), (what, r.text)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, (what, body)
    assert isinstance(body["error"], str) and body["error"], (what, body)
    return body["error"]


def test_the_request_that_killed_the_engine_is_a_400(dataflow):
    r = httpx.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=CRASHER, timeout=10)
    assert r.status_code == 400
    assert assert_oip_error(r) == "inputs[0].name: a non-empty string is required"
    assert outputs_of(dataflow.infer("chain", [tensor("x", [1.0])])) == {"OUTPUT": [110.0]}
    assert_all_alive(dataflow)


@pytest.mark.parametrize("body, headers, error", [
    (b'{"inputs": []}', {}, "inputs: at least one tensor is required"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
     {"seldon-timeout-ms": "-1"}, "header seldon-timeout-ms: '-1' is not a number"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
     {"seldon-timeout-ms": "abc"}, "header seldon-timeout-ms: 'abc' is not a number"),
    (b"[" * 100_000, {}, "body: JSON nested too deeply"),
    (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]}', {},
     "inputs[0] ('x').data: 1 elements do not fill shape [3] (3 elements)"),
])
def test_bad_requests_are_refused_at_once(dataflow, body, headers, error):
    start = time.monotonic()
    r = httpx.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=body, headers=headers,
                   timeout=10)
    assert r.status_code == 400, r.text
    assert assert_oip_error(r).startswith(error)
    assert time.monotonic() - start < 2  # refused before producing, not after a timeout


def test_oversized_bodies_get_413_without_growing_the_gateway(dataflow):
    pid = dataflow.services["gateway"].pid

    def rss_mb() -> float:
        with open(f"/proc/{pid}/status") as f:
            line = next(x for x in f if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    before = rss_mb()
    big = b"x" * (50 * 2**20)
    with httpx.Client(timeout=30) as client:
        for _ in range(5):
            r = client.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=big)
            assert r.status_code == 413
            assert "limit of 16777216 bytes" in assert_oip_error(r)

            def chunks():
                for _ in range(50):
                    yield b"x" * 2**20
            r = client.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=chunks())
            assert r.status_code == 413
            assert_oip_error(r)
    assert rss_mb() - before < 64, (before, rss_mb())
    assert outputs_of(dataflow.infer("chain", [tensor("x", [1.0])])) == {"OUTPUT": [110.0]}


def test_unknown_paths_and_methods_answer_in_the_oip_format(dataflow):
    for r in (httpx.get(f"{dataflow.url}/v2/nothing/here"),
              httpx.get(f"{dataflow.url}/v2/pipelines/chain/infer")):
        assert 400 <= r.status_code < 500
        assert_oip_error(r)


def test_two_thousand_malformed_rest_requests(dataflow):
    cases = rest_cases(2200)
    assert sum(c.expect == 400 for c in cases) >= 2000
    wrong, start = [], time.monotonic()
    with httpx.Client(timeout=30) as client:
        for c in cases:
            r = client.post(f"{dataflow.url}/v2/pipelines/chain/infer", content=c.body,
                            headers=c.headers)
            if r.status_code != c.expect:
                wrong.append((c.what, r.status_code, r.text[:200]))
            elif c.expect == 400:
                assert_oip_error(r, c.what)
    elapsed = time.monotonic() - start
    assert not wrong, (len(wrong), wrong[:10])
    assert_all_alive(dataflow)
    print(f"{len(cases)} REST cases in {elapsed:.1f}s")


def test_two_thousand_malformed_grpc_requests(dataflow):
    cases = grpc_cases(2200)
    assert sum(not c.ok for c in cases) >= 2000
    wrong, start = [], time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{dataflow.grpc_port}") as channel:
        # raw bytes out, so undecodable messages can be sent too
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=None, response_deserializer=None)
        for c in cases:
            meta = (("seldon-model", "chain.pipeline"), *c.metadata)
            try:
                infer(c.raw, metadata=meta, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code == grpc.StatusCode.INVALID_ARGUMENT and not details:
                    wrong.append((c.what, "no details"))
            expect = grpc.StatusCode.OK if c.ok else grpc.StatusCode.INVALID_ARGUMENT
            if code != expect:
                wrong.append((c.what, code))
    elapsed = time.monotonic() - start
    assert not wrong, (len(wrong), wrong[:10])
    assert_all_alive(dataflow)
    print(f"{len(cases)} gRPC cases in {elapsed:.1f}s")


def _errors_for(dataflow, pipeline: str, rid: str) -> list:
    found: list = []
    cfg = dataflow.kafka

    def arrived() -> bool:
        found.extend(read_records(cfg, [cfg.errors()], pipeline, rid))
        return bool(found)
    wait_until(arrived, 20, f"an error record for {rid}")
    return found


@pytest.mark.parametrize("value, reason", [
    (CRASHER, "pipeline chain inputs: inputs[0].name: a non-empty string is required"),
    (b"not json", "pipeline chain inputs: the record is not a JSON object"),
    (b'{"inputs": "x"}', "pipeline chain inputs: inputs: a list of tensors is required"),
])
def test_poison_records_on_the_input_topic_become_error_records(dataflow, value, reason):
    """Produced straight to the topic (no gateway to refuse them): the engine reports each on
    the errors topic and carries on; before, it died on the first and again on every restart."""
    cfg, rid = dataflow.kafka, uuid.uuid4().hex
    producer = Producer(cfg.producer())
    producer.produce(cfg.pipeline_inputs("chain"), key=rid, value=value)
    assert producer.flush(10) == 0
    [record] = _errors_for(dataflow, "chain", rid)
    doc = record.value
    assert (doc["error"], doc["status"], doc["step"]) == (reason, 400, "inputs")
    assert outputs_of(dataflow.infer("chain", [tensor("x", [2.0])])) == {"OUTPUT": [120.0]}
    assert_all_alive(dataflow)


class _Produced:
    """Stands in for the engine's offset tracker: keeps what it was asked to produce."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []

    def produce(self, _producer, _hold, topic: str, key: str, value: bytes, headers) -> None:
        self.records.append((topic, key, value))

    def acked(self, _token) -> None:
        pass


def _engine_running_chain() -> tuple[Engine, _Produced]:
    """An engine with the sample `chain` loaded and no broker: what it would produce is kept."""
    engine = Engine(KafkaConfig(bootstrap="127.0.0.1:9"), "http://127.0.0.1:9")
    spec = PipelineSpec.model_validate(sample_pipelines()["chain"])
    engine.flow.set_plan(build_plan("chain", 1, spec))
    engine.reader = SimpleNamespace(tracker=(produced := _Produced()))  # type: ignore[assignment]
    engine.producer = engine.records = None  # type: ignore[assignment]
    return engine, produced


@pytest.mark.parametrize("answer, reason", [
    (b'{"outputs": [{"name": 1}]}', "outputs[0].name: a non-empty string is required"),
    (b"<html>not json</html>", "the record is not a JSON object"),
])
def test_a_model_answer_that_is_not_oip_becomes_an_error_naming_the_step(answer, reason):
    """Fast layer: the engine's handling of a model's answer (a real model answers OIP)."""
    engine, produced = _engine_running_chain()
    cfg = engine.cfg
    call = StepCall("chain", "add10", "add10", "r1", b"{}", [("pipeline", "chain")])
    engine._answered(call, 200, answer, call.headers)
    # the answer is kept on the model's topic as it came (inspect shows it), then refused
    assert [(topic, key) for topic, key, _ in produced.records] == \
        [(cfg.model_outputs("add10"), "r1"), (cfg.errors(), "r1")]
    error = json.loads(produced.records[1][2])
    assert (error["status"], error["step"], error["error"]) == \
        (502, "add10", f"step add10 (model add10) outputs: {reason}")


def test_an_engine_bug_on_a_model_answer_answers_the_caller_with_an_error():
    """A failure while taking an answer on must still give the caller an error record (its
    input's offset is committed once the call's hold is dropped, so silence would lose it)."""
    engine, produced = _engine_running_chain()
    cfg = engine.cfg

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")
    engine.flow.on_event = broken  # type: ignore[method-assign]
    call = StepCall("chain", "add10", "add10", "r1", b"{}", [("pipeline", "chain")])
    engine._answered(call, 200, b'{"outputs": []}', call.headers)
    assert [topic for topic, _, _ in produced.records] == \
        [cfg.model_outputs("add10"), cfg.errors()]
    error = json.loads(produced.records[1][2])
    assert (error["status"], error["step"]) == (500, "engine")
    assert error["error"] == "pipeline chain: the engine failed: RuntimeError('a bug')"
