"""The seeded malformed-request generator (tests/dataflow/malformed.py) against a model, through
Envoy to the real MLServer, REST and gRPC: nothing answers 5xx, every 4xx is in the Open
Inference Protocol's error shape, and the model keeps serving."""

import time

import grpc
import httpx
import pytest

from tests.conftest import SAMPLES, platform_env
from tests.dataflow.malformed import grpc_cases, rest_cases


@pytest.fixture(scope="module")
def echo_env(tmp_path_factory, sample_models):
    with platform_env(tmp_path_factory.mktemp("fuzz"), {
            "echo": (SAMPLES / "models" / "echo", {"requirements": ["mlserver"]})}) as env:
        yield env


def test_two_thousand_malformed_rest_requests_to_a_model(echo_env):
    cases = rest_cases(2200)
    wrong, start = [], time.monotonic()
    with httpx.Client(timeout=30) as client:
        for c in cases:
            r = client.post(f"{echo_env.url}/v2/models/echo/infer", content=c.body,
                            headers={"content-type": "application/json", **c.headers})
            # what the pipeline gateway refuses, a model server may accept (echo takes an
            # empty input list): the rule is no 5xx, and every refusal in the OIP shape
            ok = r.status_code == 200 if c.expect == 200 else r.status_code < 500
            if not ok:
                wrong.append((c.what, r.status_code, r.text[:200]))
            elif r.status_code >= 400:
                body = r.json()
                if not (isinstance(body, dict) and isinstance(body.get("error"), str)):
                    wrong.append((c.what, r.status_code, r.text[:200]))
    print(f"\n{len(cases)} REST cases in {time.monotonic() - start:.1f}s")
    assert not wrong, (len(wrong), sorted({(w[0].split(" ")[0], w[1]) for w in wrong})[:20],
                       wrong[:10])


def test_two_thousand_malformed_grpc_requests_to_a_model(echo_env):
    cases = grpc_cases(2200)
    refused = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
    wrong, codes, start = [], {}, time.monotonic()
    with grpc.insecure_channel(echo_env.url.removeprefix("http://")) as channel:
        # raw bytes out, so undecodable messages can be sent too
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=None, response_deserializer=None)
        for c in cases:
            try:
                infer(c.raw, metadata=(("seldon-model", "echo"), *c.metadata), timeout=30)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
            codes[code] = codes.get(code, 0) + 1
            if c.ok and code != grpc.StatusCode.OK:
                wrong.append((c.what, code, details))
            elif code not in refused | {grpc.StatusCode.OK} or (code != grpc.StatusCode.OK
                                                                and not details):
                wrong.append((c.what, code, details))
    print(f"\n{len(cases)} gRPC cases in {time.monotonic() - start:.1f}s: {codes}")
    assert not wrong, (len(wrong), wrong[:10])
    assert echo_env.infer("echo", body=b'{"inputs": [{"name": "x", "shape": [1], '
                          b'"datatype": "FP32", "data": [1]}]}')[0] == 200
