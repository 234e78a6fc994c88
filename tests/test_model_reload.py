"""A model version the scheduler routes to but its server does not hold right now (the server
restarted, or it is reloading the version): the caller is told to retry (503 / UNAVAILABLE
with the OIP error body), not that its request was wrong, and Envoy retries it first."""

import json
import os
import re
import signal
import urllib.request
from contextlib import contextmanager

import grpc
import pytest

from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc
from tests.conftest import platform_env, wait_for

RETRIES = 3  # runtime.scheduler.envoy_resources.RETRY_POLICY


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_models):
    with platform_env(tmp_path_factory.mktemp("reload"),
                      {"iris": (sample_models / "iris", {})}) as env:
        yield env


def _mlserver(env, path: str, data: bytes | None = None) -> dict:
    port = env.platform.replicas["mlserver-0"]["http"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else {}


def _internal_name(env) -> str:
    [entry] = [m["name"] for m in _mlserver(env, "/v2/repository/index", b"{}")
               if m["name"].startswith("iris")]
    return entry


def _retries(env) -> int:
    """Envoy's count of retried upstream requests, over every cluster."""
    url = f"http://127.0.0.1:{env.platform.ports['envoyAdmin']}/stats?filter=upstream_rq_retry$"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return sum(int(n) for n in re.findall(r": (\d+)$", text, re.M))


@contextmanager
def _paused(env, service: str):
    """The service's process stopped (SIGSTOP) and continued on leaving: here, the agent, so it
    cannot notice the unload and move the route to itself while we look."""
    pid = env.platform.services[service].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_version_missing_on_its_server_answers_503_after_envoys_retries(env):
    internal = _internal_name(env)
    assert env.infer("iris")[0] == 200
    with _paused(env, "mlserver-0-agent"):
        _mlserver(env, f"/v2/repository/models/{internal}/unload", b"")  # behind core2's back
        before = _retries(env)
        status, body, _ = env.infer("iris")
        assert status == 503, body
        assert body == {"error": "model iris is loading on this server; retry"}
        assert internal not in json.dumps(body)  # the internal name stays inside
        assert _retries(env) - before == RETRIES

        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(
            grpc.insecure_channel(env.url.removeprefix("http://")))
        request = pb.ModelInferRequest(model_name="iris", inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="predict", datatype="FP32", shape=[1, 4],
                contents=pb.InferTensorContents(fp32_contents=[6.0, 2.2, 5.0, 1.5]))])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, metadata=[("seldon-model", "iris")], timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "loading" in err.value.details()

    # The agent notices the server lost the version, routes it to itself and reloads it on the
    # next request: it serves again with no one loading it by hand, and never answers a 4xx.
    def serves() -> bool:
        status, body, _ = env.infer("iris")
        assert status in (200, 503), body
        return status == 200
    wait_for(serves, 30, "iris to serve again")
