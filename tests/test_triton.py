"""A Triton server for real (the tritonserver of the nvidia-pytriton wheel, Python backend, on the
CPU): a Seldon-style Triton model is placed on it by its requirements, answers REST and gRPC
through Envoy under its own name with tritonclient (the agent's proxy renames requests to the
version inside Triton), names the version that served as MLServer models do, serves inside a
pipeline, rolls out a new version with no failed request, is evicted and reloaded under
over-commit, and goes when unloaded."""

import json
import subprocess
import sys
import threading
import urllib.request

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from runtime.local.config import LocalConfig, LocalServer
from runtime.local.platform import Platform
from runtime.specs.manifest import load_file
from tests.conftest import ROOT, Env, free_ports, wait_for

A = list(range(1, 17))
B = [1] * 16
SUM = [a + b for a, b in zip(A, B, strict=True)]
DIFF = [a - b for a, b in zip(A, B, strict=True)]
ARTIFACT = str(ROOT / "samples/models/tfsimple")


def _request(a=A, b=B, datatype="INT32") -> bytes:
    return json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": datatype, "data": a},
        {"name": "INPUT1", "shape": [1, 16], "datatype": datatype, "data": b}]}).encode()


def _sample_spec(**changes) -> dict:
    [model] = load_file(str(ROOT / "samples/tfsimple.yaml"))
    return {**json.loads(model.spec_json()), "storageUri": ARTIFACT, **changes}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # Triton holds 250Ki of models (x2 with over-commit placement): three 100Ki models make
    # the agent evict one
    platform = Platform(tmp_path_factory.mktemp("triton"), LocalConfig(
        ports=free_ports(), pipelines=True,
        servers=[LocalServer(name="mlserver"),
                 LocalServer(name="triton", serverConfig="triton", memory="250Ki",
                             overCommitPercentage=100)])).start()
    try:
        env = Env(platform)
        env.scheduler.apply("Model", "tfsimple", json.dumps(_sample_spec()))
        env.scheduler.wait("Model", "tfsimple", timeout=120)
        yield env
    finally:
        platform.stop()


def _answers(env, model="tfsimple") -> dict:
    status, body, _ = env.infer(model, body=_request())
    assert status == 200, body
    return body


def test_a_triton_model_is_placed_on_the_triton_server(env):
    [status] = env.scheduler.status("Model", "tfsimple")
    assert status.state == "ModelAvailable"
    assert status.versions[0].server == "triton"


def test_rest_inference_through_envoy_with_tritonclient(env):
    client = httpclient.InferenceServerClient(url=env.url.removeprefix("http://"))
    inputs = []
    for name, values in (("INPUT0", A), ("INPUT1", B)):
        tensor = httpclient.InferInput(name, [1, 16], "INT32")
        tensor.set_data_from_numpy(np.array(values, dtype=np.int32).reshape(1, 16),
                                   binary_data=False)
        inputs.append(tensor)
    result = client.infer("tfsimple", inputs)
    assert result.as_numpy("OUTPUT0").ravel().tolist() == SUM
    assert result.as_numpy("OUTPUT1").ravel().tolist() == DIFF
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"]) == ("tfsimple_1", "1")  # as MLServer's
    assert client.is_model_ready("tfsimple")


def test_grpc_inference_through_envoy_with_tritonclient(env):
    out = subprocess.run([sys.executable, "-m", "tests.triton_grpc_client",
                          env.url.removeprefix("http://"), "tfsimple"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["OUTPUT0"], answer["OUTPUT1"]) == (SUM, DIFF)
    assert (answer["model_name"], answer["model_version"], answer["ready"]) == (
        "tfsimple_1", "1", True)


def test_metadata_names_the_version_and_its_tensors(env):
    with urllib.request.urlopen(f"{env.url}/v2/models/tfsimple", timeout=30) as r:
        meta = json.loads(r.read())
    assert meta["name"] == "tfsimple_1" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])]


def test_bad_input_is_the_callers_400_in_the_users_name(env):
    status, body, _ = env.infer("tfsimple", body=_request(datatype="FP32"))
    assert status == 400, body
    assert "FP32" in body["error"] and "model 'tfsimple'" in body["error"], body


def test_a_triton_model_serves_inside_a_pipeline(env):
    env.scheduler.apply("Pipeline", "tfpipe", json.dumps({
        "steps": [{"name": "tfsimple"}], "output": {"steps": ["tfsimple"]}}))
    assert env.scheduler.wait("Pipeline", "tfpipe", timeout=120).state == "PipelineReady"
    r = httpx.post(f"{env.url}/v2/pipelines/tfpipe/infer", content=_request(), timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert (out["OUTPUT0"], out["OUTPUT1"]) == (SUM, DIFF)
    env.scheduler.delete("Pipeline", "tfpipe")


def test_a_new_version_rolls_out_with_no_failed_request(env):
    failures, served, stop = [], set(), threading.Event()

    def call():
        while not stop.is_set():
            status, body, _ = env.infer("tfsimple", body=_request())
            if status != 200:
                failures.append((status, body))
            else:
                served.add(body["model_version"])
    caller = threading.Thread(target=call)
    caller.start()
    try:
        env.scheduler.apply("Model", "tfsimple", json.dumps(_sample_spec(memory="110Ki")))
        wait_for(lambda: env.scheduler.status("Model", "tfsimple")[0].versions[0].version == 2
                 and env.scheduler.status("Model", "tfsimple")[0].state == "ModelAvailable",
                 120, "tfsimple v2 Available")
        wait_for(lambda: _answers(env)["model_version"] == "2", 60, "answers from v2")
    finally:
        stop.set()
        caller.join(60)
    assert failures == []
    assert served == {"1", "2"}


def test_over_commit_evicts_a_triton_model_and_reloads_it_on_demand(env):
    for name in ("tfsimple-a", "tfsimple-b"):
        env.scheduler.apply("Model", name, json.dumps(_sample_spec()))
        env.scheduler.wait("Model", name, timeout=120)
    # 110Ki + 100Ki + 100Ki on 250Ki: the agent evicted the least recently used, tfsimple; a
    # request reloads it (evicting another) and every model answers
    for name in ("tfsimple", "tfsimple-a", "tfsimple-b", "tfsimple"):
        assert (_answers(env, name)["outputs"][0]["data"]) == SUM
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{env.platform.replicas['triton-0']['agent_metrics']}/metrics",
        timeout=10).read().decode()
    counts = {line.split("{")[0]: float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith(("seldon_cache_evict_count", "seldon_cache_miss_count"))}
    assert counts["seldon_cache_evict_count"] >= 1 and counts["seldon_cache_miss_count"] >= 1, \
        counts
    for name in ("tfsimple-a", "tfsimple-b"):
        env.scheduler.delete("Model", name)


def test_unloaded_it_is_gone_from_envoy_and_triton(env):
    triton_http = env.platform.replicas["triton-0"]["http"]
    env.scheduler.delete("Model", "tfsimple")
    wait_for(lambda: env.infer("tfsimple", body=_request())[0] == 404, 60,
             "tfsimple to answer 404")

    def gone():
        req = urllib.request.Request(f"http://127.0.0.1:{triton_http}/v2/repository/index",
                                     data=b"{}", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return all(m.get("state") != "READY" for m in json.loads(r.read()))
    wait_for(gone, 60, "Triton to unload every model")
