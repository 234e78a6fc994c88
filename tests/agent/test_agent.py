"""The agent as a real process between a minimal scheduler and a real MLServer."""

import concurrent.futures

import grpc
import httpx

from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc as pb_grpc

from .conftest import PROBE_CLASS, AgentProcess, infer, iris_spec

MB334 = 334 * 10**6


def test_load_serves_the_model_and_unload_removes_it(agent, scheduler, model_server,
                                                     iris_artifact):
    sub = scheduler.wait_subscriptions(1)
    assert (sub.server_name, sub.memory_bytes, sub.over_commit_percentage) == ("mlserver",
                                                                               10**9, 10)
    assert list(sub.capabilities) == ["sklearn", "mlserver"]
    assert (sub.agent_http_port, sub.server_grpc_port) == (agent.http_port,
                                                           model_server.grpc_port)

    internal = scheduler.load("iris", 1, iris_spec(str(iris_artifact), "100M"))
    loaded = scheduler.wait_event(internal, "LOADED")
    assert scheduler.events_for(internal) == ["LOADING", "LOADED"]
    assert loaded.available_memory_bytes == 10**9 - 100 * 10**6

    r = infer(model_server.url, "iris", internal)
    assert r.status_code == 200, r.text
    assert (r.json()["model_name"], r.json()["model_version"]) == (internal, "1") == ("iris_1",
                                                                                    "1")
    assert r.json()["outputs"][0]["data"] == [PROBE_CLASS]

    scheduler.unload("iris", 1)
    unloaded = scheduler.wait_event(internal, "UNLOADED")
    assert unloaded.available_memory_bytes == 10**9
    assert internal not in model_server.held()
    assert not (model_server.repository / internal).exists()


ECHO_RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse


class Echo(MLModel):
    async def predict(self, payload):
        scale = float(self.settings.parameters.extra["scale"])
        data = NumpyCodec.decode_input(payload.inputs[0]) * scale
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("echo", data)])
"""


def test_custom_runtime_from_the_artifacts_model_settings(agent, scheduler, model_server,
                                                          tmp_path):
    scheduler.wait_subscriptions(1)
    artifact = tmp_path / "echo"
    artifact.mkdir()
    (artifact / "echo_runtime.py").write_text(ECHO_RUNTIME)
    (artifact / "model-settings.json").write_text('{"implementation": "echo_runtime.Echo"}')
    internal = scheduler.load("echo", 3, {"storageUri": f"file://{artifact}",
                                          "requirements": ["python"],
                                          "parameters": [{"name": "scale", "value": "10"}]})
    scheduler.wait_event(internal, "LOADED")
    r = infer(model_server.url, "echo", internal)
    assert r.status_code == 200, r.text
    assert (r.json()["model_name"], r.json()["model_version"]) == ("echo_3", "3")
    assert r.json()["outputs"][0]["data"] == [60.0, 22.0, 50.0, 15.0]


def test_bad_uri_fails_with_the_reason(agent, scheduler, model_server, tmp_path):
    scheduler.wait_subscriptions(1)
    missing = scheduler.load("ghost", 1, iris_spec(str(tmp_path / "nowhere")))
    reason = scheduler.wait_event(missing, "LOAD_FAILED").reason
    assert "storageUri" in reason and "nothing found" in reason

    unknown = scheduler.load("odd", 1, iris_spec("foo://bucket/model"))
    assert "unsupported scheme 'foo'" in scheduler.wait_event(unknown, "LOAD_FAILED").reason

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.joblib").write_bytes(b"not a model")
    broken = scheduler.load("broken", 1, iris_spec(str(corrupt)))
    reason = scheduler.wait_event(broken, "LOAD_FAILED").reason
    assert reason.startswith("model server could not load the model: ")
    assert "Traceback" not in reason

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"0")
    no_runtime = scheduler.load("plain", 1, {"storageUri": str(plain),
                                             "requirements": ["tensorflow"]})
    reason = scheduler.wait_event(no_runtime, "LOAD_FAILED").reason
    assert "requirements" in reason and "MLServer runtime" in reason
    assert model_server.held() == set()


def test_over_commit_evicts_lru_and_reloads_on_demand(agent, scheduler, model_server,
                                                      iris_artifact):
    scheduler.wait_subscriptions(1)
    spec = iris_spec(str(iris_artifact), "334M")
    a = scheduler.load("a", 1, spec, MB334)
    scheduler.wait_event(a, "LOADED")
    b = scheduler.load("b", 1, spec, MB334)
    scheduler.wait_event(b, "LOADED")
    # `a` served a request after `b` loaded, so `b` is the least recently used.
    assert infer(model_server.url, "a", a).status_code == 200

    c = scheduler.load("c", 1, spec, MB334)
    scheduler.wait_event(c, "LOADED")
    assert "EVICTING" in scheduler.events_for(b)
    assert model_server.held() == {a, c}
    assert agent.metric("seldon_cache_evict_count") == 1

    # Envoy now sends b's traffic to the agent: concurrent requests share one reload.
    loads_before = model_server.load_requests(b)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: infer(agent.url, "b", b), range(4)))
    assert [r.status_code for r in answers] == [200] * 4, answers[0].text
    assert {r.json()["model_name"] for r in answers} == {b}
    assert model_server.load_requests(b) == loads_before + 1
    scheduler.wait_event(b, "RESIDENT")
    assert b in model_server.held() and len(model_server.held()) == 2
    assert agent.metric("seldon_cache_evict_count") == 2

    # The evicted one (a: used before c loaded) comes back through the gRPC proxy.
    evicted = ({a, b, c} - model_server.held()).pop()
    assert evicted == a
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(_grpc_probe("a"), metadata=[("seldon-internal-model", a)],
                                   timeout=30)
    assert response.model_name == a
    assert list(response.outputs[0].contents.int64_contents) == [PROBE_CLASS]
    scheduler.wait_event(a, "RESIDENT")


def test_proxy_unknown_model_is_404_with_oip_body(agent, scheduler):
    scheduler.wait_subscriptions(1)
    r = infer(agent.url, "nope", "nope_1")
    assert r.status_code == 404
    assert r.json() == {"error": "Model nope not found"}
    with grpc.insecure_channel(f"127.0.0.1:{agent.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(_grpc_probe("nope"), metadata=[("seldon-internal-model", "x_1")])
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("unknown model answered")


def test_resubscribe_reports_loaded_and_reloads_nothing(agent, scheduler, model_server,
                                                        iris_artifact, tmp_path):
    scheduler.wait_subscriptions(1)
    spec = iris_spec(str(iris_artifact), "334M")
    names = [scheduler.load(n, 1, spec, MB334) for n in ("a", "b", "c")]
    for internal in names:
        scheduler.wait_event(internal, "LOADED")
    evicted = ({*names} - model_server.held()).pop()
    held = model_server.held()
    loads = {n: model_server.load_requests(n) for n in names}

    # Scheduler restart: the stream ends, the agent comes back with what it holds.
    scheduler.drop_stream()
    again = scheduler.wait_subscriptions(2)
    assert {m.internal_name for m in again.loaded} == held
    assert [m.internal_name for m in again.evicted] == [evicted]
    assert {(m.name, m.version) for m in again.loaded} == {(n[0], 1) for n in held}

    # Agent restart (MLServer keeps running): same answer, nothing reloaded.
    agent.stop()
    fresh = AgentProcess(tmp_path, model_server, scheduler.port).start()
    try:
        third = scheduler.wait_subscriptions(3)
        assert {m.internal_name for m in third.loaded} == held
        assert [m.internal_name for m in third.evicted] == [evicted]
        assert {n: model_server.load_requests(n) for n in names} == loads
        for internal in held:
            assert infer(model_server.url, internal[0], internal).status_code == 200
        # ...and the restarted agent still reloads the evicted one on demand.
        assert infer(fresh.url, evicted[0], evicted).status_code == 200
    finally:
        fresh.stop()


def test_agent_waits_for_the_scheduler_and_keeps_models(tmp_path, model_server, iris_artifact):
    from .conftest import FakeScheduler

    port = FakeScheduler().port
    proc = AgentProcess(tmp_path, model_server, port).start()  # ready before any scheduler
    first = FakeScheduler(port).start()
    try:
        first.wait_subscriptions(1)
        internal = first.load("iris", 1, iris_spec(str(iris_artifact)))
        first.wait_event(internal, "LOADED")
        first.stop()
        assert infer(model_server.url, "iris", internal).status_code == 200  # still served
        second = FakeScheduler(port).start()
        try:
            sub = second.wait_subscriptions(1, timeout=10)
            assert [m.internal_name for m in sub.loaded] == [internal]
        finally:
            second.stop()
    finally:
        proc.stop()
    assert httpx.get(f"{model_server.url}/v2/models/iris_1/ready").status_code == 200


def _grpc_probe(model: str) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1, 4],
        contents=pb.InferTensorContents(fp32_contents=[6.0, 2.2, 5.0, 1.5]))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def test_model_server_restart_moves_models_to_reload_on_demand(agent, scheduler, model_server,
                                                               iris_artifact):
    scheduler.wait_subscriptions(1)
    internal = scheduler.load("iris", 1, iris_spec(str(iris_artifact), "100M"))
    scheduler.wait_event(internal, "LOADED")
    model_server.service.kill()
    model_server.start()  # same ports and repository, nothing loaded
    evicting = scheduler.wait_event(internal, "EVICTING", timeout=30)
    assert evicting.available_memory_bytes == 10**9 - 100 * 10**6  # counted until acked
    r = infer(agent.url, "iris", internal)
    assert r.status_code == 200 and r.json()["model_name"] == internal
    scheduler.wait_event(internal, "RESIDENT")
    assert model_server.held() == {internal}
