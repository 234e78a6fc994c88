"""`core2 pipeline infer` against an Envoy serving TLS: the CLI verifies it with the local
platform's CA (state.json's inferenceCa) or $CORE2_INFERENCE_CA, as `model infer` does."""

import json
import os
import subprocess
import sys

from runtime.local.config import EnvoyTls
from runtime.specs.manifest import load_file
from tests.conftest import ROOT, SAMPLES
from tests.test_envoy_tls import certs  # noqa: F401  # the fixture: a CA and Envoy's certificate

X = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})


def core2(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORE2_")}
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})


def test_pipeline_infer_verifies_a_tls_envoy_with_the_platforms_ca(make_env, certs):  # noqa: F811
    env = make_env(pipelines=True, envoyTls=EnvoyTls(
        certFile=certs / "tls.crt", keyFile=certs / "tls.key", caFile=certs / "ca.pem"))
    run_dir = str(env.platform.run_dir)
    for r in load_file(SAMPLES / "pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            env.scheduler.apply_resource(r)
    loaded = core2("pipeline", "load", "-f", str(SAMPLES / "pipelines/chain.yaml"),
                   "--run-dir", run_dir)
    assert loaded.returncode == 0, loaded.stderr

    for grpc_flag in ([], ["--grpc"]):
        out = core2("pipeline", "infer", "chain", X, *grpc_flag, "--run-dir", run_dir)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["outputs"][0]["data"] == [110.0]

    # Elsewhere than the platform's run dir: the URL and the CA from the environment.
    elsewhere = {"CORE2_INFERENCE": env.url, "CORE2_SCHEDULER": env.platform.scheduler_address}
    out = core2("pipeline", "infer", "chain", X, **elsewhere,
                CORE2_INFERENCE_CA=str(certs / "ca.pem"))
    assert out.returncode == 0, out.stderr
    refused = core2("pipeline", "infer", "chain", X, **elsewhere)  # no CA: not trusted
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stdout
