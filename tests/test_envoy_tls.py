"""Envoy terminating TLS: REST over HTTPS, gRPC over TLS, and pipelines whose engine calls the
models through the same TLS listener."""

import json
import ssl
import subprocess
import sys

import grpc
import httpx
import pytest
import trustme

from runtime.local.config import EnvoyTls, LocalConfig
from runtime.pb import grpc_service_pb2 as oip
from runtime.pb import grpc_service_pb2_grpc as oip_grpc
from runtime.specs import SpecError
from runtime.specs.manifest import load_file
from tests.conftest import IRIS_CLASS, PROBE_INPUT, ROOT, iris_request, write_cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    home = tmp_path_factory.mktemp("envoy-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(home / "ca.pem"))
    write_cert(ca.issue_cert("127.0.0.1", "localhost"), home / "tls.crt", home / "tls.key")
    return home


def test_inference_and_pipelines_over_tls(make_env, sample_models, certs):
    env = make_env(pipelines=True, envoyTls=EnvoyTls(
        certFile=certs / "tls.crt", keyFile=certs / "tls.key", caFile=certs / "ca.pem"))
    assert env.url.startswith("https://")
    env.load_model("iris", sample_models / "iris")
    verify = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    r = httpx.post(f"{env.url}/v2/models/iris/infer", content=iris_request(), verify=verify,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [IRIS_CLASS]
    # Without the CA the certificate is refused; plaintext on the TLS port gets no answer.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(f"{env.url}/v2/models/iris/infer", content=iris_request())
    with pytest.raises(httpx.HTTPError):
        httpx.post(env.url.replace("https", "http") + "/v2/models/iris/infer",
                   content=iris_request(), timeout=5)

    # gRPC over TLS (ALPN h2)
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    with grpc.secure_channel(env.url.removeprefix("https://"), creds) as channel:
        request = oip.ModelInferRequest(model_name="iris", inputs=[
            oip.ModelInferRequest.InferInputTensor(
                name="predict", datatype="FP32", shape=[1, 4],
                contents=oip.InferTensorContents(fp32_contents=PROBE_INPUT))])
        reply = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=[("seldon-model", "iris")], timeout=30)
    assert reply.model_name == "iris_1" and list(reply.outputs[0].contents.int64_contents) == [
        IRIS_CLASS]

    # The engine reaches the models through the TLS listener.
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            env.scheduler.apply_resource(r)
            env.scheduler.wait("Model", r.name, timeout=90)
    [chain] = load_file(ROOT / "samples/pipelines/chain.yaml")
    env.scheduler.apply_resource(chain)
    env.scheduler.wait("Pipeline", "chain", timeout=90)
    r = httpx.post(f"{env.url}/v2/models/chain/infer", verify=verify, timeout=30,
                   headers={"seldon-model": "chain.pipeline"},
                   json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                     "data": [1.0]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [110.0]

    # `core2 model infer` finds the scheme and the CA in the platform's state.
    for grpc_flag in ([], ["--grpc"]):
        cli = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "--run-dir", str(env.platform.run_dir),
             "model", "infer", "iris", iris_request().decode(), *grpc_flag],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["outputs"][0]["data"] == [IRIS_CLASS]


def test_tls_files_are_checked_when_the_config_loads(tmp_path, certs):
    config = tmp_path / "local.yaml"
    config.write_text(f"envoyTls: {{certFile: {certs / 'tls.crt'}, keyFile: missing.key}}\n")
    with pytest.raises(SpecError, match=r"envoyTls\.keyFile: missing\.key: no such file"):
        LocalConfig.load(config)
    (tmp_path / "tls.key").write_bytes((certs / "tls.key").read_bytes())
    config.write_text(f"envoyTls: {{certFile: {certs / 'tls.crt'}, keyFile: tls.key}}\n")
    tls = LocalConfig.load(config).envoyTls
    assert tls.keyFile == tmp_path / "tls.key" and tls.ca == certs / "tls.crt"
