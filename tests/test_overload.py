"""What Envoy answers by itself: the Open Inference Protocol's `{"error": ...}` body for REST
(404, 413, 503), gRPC status codes for gRPC, and per-model overload limits, so a model asked
for more than it may take sheds load with fast 503s instead of queueing into timeouts."""

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from runtime.envoy import NOT_FOUND_BODY
from runtime.limits import InferenceLimits
from runtime.local.config import LocalServer
from runtime.pb import grpc_service_pb2 as pb
from runtime.pb import grpc_service_pb2_grpc
from runtime.specs.fetch import FetchRules
from tests.conftest import IRIS_CLASS, iris_request, platform_env

SLOW_S = 0.5
SLOW_RUNTIME = f'''
import asyncio
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse

class Slow(MLModel):
    async def predict(self, payload):
        await asyncio.sleep({SLOW_S})
        outputs = [NumpyCodec.encode_output(i.name, NumpyCodec.decode_input(i))
                   for i in payload.inputs]
        return InferenceResponse(model_name=self.name, outputs=outputs)
'''
LIMITS = InferenceLimits(maxRequestBytes=64 * 1024, serverMaxRequests=2, serverMaxPendingRequests=2)
SLOW_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                    "data": [1.0]}]}).encode()


@pytest.fixture(scope="module")
def limited(tmp_path_factory, sample_models):
    """A platform with small limits, serving iris and a model that takes SLOW_S per request."""
    root = tmp_path_factory.mktemp("overload")
    slow = root / "slow"
    slow.mkdir()
    (slow / "slow_model.py").write_text(SLOW_RUNTIME)
    (slow / "model-settings.json").write_text(json.dumps(
        {"name": "slow", "implementation": "slow_model.Slow"}))
    server = LocalServer(name="mlserver", fetch=FetchRules(localRoots=[root]))
    with platform_env(root / "run", {"iris": (sample_models / "iris", {}),
                                     "slow": (slow, {"requirements": ["mlserver"]})},
                      servers=[server], limits=LIMITS) as env:
        yield env


def _post(url: str, body: bytes, timeout: float = 30) -> tuple[int, dict, dict, float]:
    """(status, JSON body, headers, seconds taken)."""
    start = time.monotonic()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text, headers = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, text, headers = e.code, e.read(), dict(e.headers)
    return status, json.loads(text), headers, time.monotonic() - start


def test_unknown_model_is_a_plain_oip_error(limited):
    status, body, headers, _ = _post(f"{limited.url}/v2/models/nope/infer", iris_request())
    assert status == 404
    assert body == {"error": NOT_FOUND_BODY}  # one level: not an error inside an error
    assert headers["content-type"] == "application/json"


def test_body_over_the_limit_is_413_with_oip_body(limited):
    big = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                                  "data": [1.0] * 4}], "parameters": {"pad": "x" * 100_000}})
    status, body, _, _ = _post(f"{limited.url}/v2/models/iris/infer", big.encode())
    assert status == 413 and "error" in body and isinstance(body["error"], str), body
    assert limited.predict("iris") == IRIS_CLASS


def test_grpc_errors_stay_grpc(limited):
    address = limited.url.removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"),
                            metadata=[("seldon-model", "nope")], timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not err.value.details().startswith("{")  # not the REST JSON body


def test_overload_sheds_fast_503s_and_keeps_serving(limited):
    """16 clients against a model whose server may have 2 requests in flight and 2 queued: the
    rest get an immediate 503 in the OIP shape; the model keeps its full throughput."""
    url = f"{limited.url}/v2/models/slow/infer"
    deadline = time.monotonic() + 4 * SLOW_S * 2

    def client(_):
        out = []
        while time.monotonic() < deadline:
            out.append(_post(url, SLOW_BODY))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(client, range(16)) for r in rs]
    statuses = {s for s, *_ in results}
    assert statuses <= {200, 503}, statuses
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    assert shed, "no request was shed"
    for _, body, headers, _ in shed:
        assert "overloaded" in body["error"] and headers.get("x-envoy-overloaded") == "true"
    # a shed request is answered without waiting for the model
    assert sorted(t for *_, t in shed)[len(shed) // 2] < SLOW_S / 2
    # 2 at a time, SLOW_S each, for the whole window: goodput did not collapse
    window = 4 * SLOW_S * 2
    assert len(ok) >= 0.5 * 2 * window / SLOW_S, (len(ok), len(shed))
    # served requests wait behind at most the two pending ones, not behind all 16 clients (a
    # queue without limits: ~8 x SLOW_S each)
    assert sorted(t for *_, t in ok)[len(ok) // 2] < 4 * SLOW_S
    print(f"\noverload: {len(ok)} served, {len(shed)} shed in {window:.0f} s; "
          f"median shed answer {sorted(t for *_, t in shed)[len(shed) // 2] * 1000:.1f} ms")


def test_overload_over_grpc_is_unavailable(limited):
    address = limited.url.removeprefix("http://")
    request = pb.ModelInferRequest(model_name="slow", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1],
                                              contents=pb.InferTensorContents(fp32_contents=[1]))])
    with grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(request, metadata=[("seldon-model", "slow")],
                                          timeout=30) for _ in range(12)]
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert codes.count(grpc.StatusCode.OK) >= 2
    assert grpc.StatusCode.UNAVAILABLE in codes
