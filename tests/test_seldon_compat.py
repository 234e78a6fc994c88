"""What a Seldon Core 2 user's scripts rely on (issue 16), through the `core2` CLI and Envoy on
one local platform, with the manifests in samples/ unchanged: status JSON in the shapes and
field names Seldon's CLI prints, answers named like Seldon's (`model_name`, `model_version`),
a pipeline loaded before its models, and requirements no server offers refused at load.

The expected field names are those Seldon's documentation shows for `seldon model|pipeline|
experiment|server status`."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from runtime.local.config import LocalConfig, LocalServer
from runtime.local.platform import Platform
from runtime.specs.fetch import FetchRules
from tests.conftest import ROOT, SAMPLES, Env, free_ports

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# Declared by the artifact: the tensors the server knows, which metadata must answer.
TENSORS = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
           "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1]}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_models):
    tmp = tmp_path_factory.mktemp("seldon")
    artifact = tmp / "artifacts" / "add10-declared"
    shutil.copytree(SAMPLES / "models" / "add10", artifact)
    settings = json.loads((artifact / "model-settings.json").read_text())
    (artifact / "model-settings.json").write_text(json.dumps({**settings, **TENSORS}))
    cfg = LocalConfig(ports=free_ports(), pipelines=True, servers=[LocalServer(
        name="mlserver", fetch=FetchRules(localRoots=[str(tmp / "artifacts")]))])
    platform = Platform(tmp / "run", cfg).start()
    try:
        e = Env(platform)
        e.artifact = artifact
        yield e
    finally:
        platform.stop()


def core2(env, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--scheduler", env.platform.scheduler_address,
         "--inference", env.url, "--timeout", "180", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def status(env, *args) -> dict | list:
    out = core2(env, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_pipeline_loaded_before_its_models_waits_for_them(env):
    loaded = core2(env, "pipeline", "load", "-f", str(SAMPLES / "pipelines/chain.yaml"),
                   "--no-wait")
    assert loaded.returncode == 0, loaded.stderr
    doc = status(env, "pipeline", "status", "chain")
    assert doc["pipelineName"] == "chain"
    state = doc["versions"][0]["state"]
    assert (state["status"], state["modelsReady"]) == ("PipelineCreating", False)
    assert "add10 (not loaded)" in state["reason"] and "mul10 (not loaded)" in state["reason"]

    applied = core2(env, "apply", "-f", str(SAMPLES / "quickstart.yaml"))  # brings the models
    assert applied.returncode == 0, applied.stderr
    doc = status(env, "pipeline", "status", "chain", "-w", "PipelineReady")
    state = doc["versions"][0]["state"]
    assert state["status"] == "PipelineReady" and state["modelsReady"] is True
    assert state["pipelineVersion"] == 1 and "reason" not in state
    assert RFC3339.match(state["lastChangeTimestamp"])
    definition = doc["versions"][0]["pipeline"]
    assert (definition["name"], definition["version"]) == ("chain", 1)
    assert [s["name"] for s in definition["steps"]] == ["add10", "mul10"]
    assert definition["output"]["steps"] == ["mul10"]


def test_status_json_has_seldons_shapes_and_field_names(env):
    assert core2(env, "apply", "-f", str(SAMPLES / "quickstart.yaml")).returncode == 0

    doc = status(env, "model", "status", "iris", "-w", "ModelAvailable")
    assert set(doc) == {"modelName", "versions"} and doc["modelName"] == "iris"
    [v] = doc["versions"]
    assert {"version", "serverName", "kubernetesMeta", "modelReplicaState", "state",
            "modelDefn"} == set(v)
    assert (v["version"], v["serverName"]) == (1, "mlserver")
    assert v["modelReplicaState"]["0"]["state"] == "Available"
    assert RFC3339.match(v["modelReplicaState"]["0"]["lastChangeTimestamp"])
    assert v["state"]["state"] == "ModelAvailable" and v["state"]["availableReplicas"] == 1
    assert "reason" not in v["state"]  # as Seldon's: empty strings are left out
    assert v["modelDefn"]["meta"]["name"] == "iris"
    assert v["modelDefn"]["modelSpec"]["requirements"] == ["sklearn"]
    assert v["modelDefn"]["modelSpec"]["uri"].endswith("models/iris")
    assert v["modelDefn"]["deploymentSpec"]["replicas"] == 1
    every = status(env, "model", "status")
    assert {"iris", "iris2", "add10", "mul10"} <= {d["modelName"] for d in every}

    doc = status(env, "experiment", "status", "iris-ab", "-w")
    assert doc == {"experimentName": "iris-ab", "active": True, "candidatesReady": True,
                   "mirrorReady": True, "statusDescription": "experiment active",
                   "kubernetesMeta": {}}

    doc = status(env, "server", "status", "mlserver")
    assert {"serverName", "resources", "expectedReplicas", "availableReplicas",
            "numLoadedModelReplicas", "kubernetesMeta"} == set(doc)
    assert (doc["serverName"], doc["expectedReplicas"], doc["availableReplicas"]) == (
        "mlserver", 1, 1)
    [replica] = doc["resources"]
    assert replica["replicaIdx"] == 0 and int(replica["totalMemoryBytes"]) > 0
    assert replica["numLoadedModels"] == doc["numLoadedModelReplicas"] >= 4
    assert {"availableMemoryBytes", "overCommitPercentage"} <= set(replica)


def test_a_pipeline_unloaded_and_loaded_again_is_ready_at_once(env):
    # A user's scripts unload and load pipelines again: the reloaded one used to stay
    # PipelineCreating ("waiting for the dataflow engine") while it served (issue 16).
    assert core2(env, "apply", "-f", str(SAMPLES / "quickstart.yaml")).returncode == 0
    chain = str(SAMPLES / "pipelines/chain.yaml")
    before = status(env, "pipeline", "status", "chain")["versions"][0]["state"]
    for attempt in (1, 2):
        unloaded = core2(env, "pipeline", "unload", "chain")
        assert unloaded.returncode == 0, unloaded.stderr
        started = time.monotonic()
        loaded = core2(env, "--timeout", "30", "pipeline", "load", "-f", chain)
        took = time.monotonic() - started
        assert loaded.returncode == 0, loaded.stderr
        state = status(env, "pipeline", "status", "chain")["versions"][0]["state"]
        assert state["status"] == "PipelineReady", state
        # versions go on from the unloaded one: a (name, version) never names two loads
        assert state["pipelineVersion"] == before["pipelineVersion"] + attempt
        assert took < 30, f"PipelineReady {took:.1f}s after load"
    body, _ = _post(env, "/v2/pipelines/chain/infer", {"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert body["outputs"][0]["data"] == [110.0]


def _post(env, path: str, body: dict, headers: dict | None = None) -> tuple[dict, dict]:
    req = urllib.request.Request(env.url + path, data=json.dumps(body).encode(), headers={
        "content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read()), dict(r.headers)


def test_answers_name_the_version_that_served_like_seldon(env):
    assert core2(env, "apply", "-f", str(SAMPLES / "quickstart.yaml")).returncode == 0
    iris = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                        "data": [6.0, 2.2, 5.0, 1.5]}]}
    # a model: Seldon answers {"model_name": "iris_1", "model_version": "1"}
    body, _ = _post(env, "/v2/models/iris/infer", iris)
    assert (body["model_name"], body["model_version"]) == ("iris_1", "1")

    # through an experiment: the candidate that served, the one x-seldon-route names
    seen = set()
    for _ in range(20):
        body, headers = _post(env, "/v2/models/iris-ab/infer", iris,
                              {"seldon-model": "iris-ab.experiment"})
        assert headers["x-seldon-route"] == f":{body['model_name']}:"
        seen.add((body["model_name"], body["model_version"]))
    assert seen <= {("iris_1", "1"), ("iris2_1", "1")} and seen

    # through a pipeline: empty, as Seldon's (x-pipeline-version says which version)
    body, headers = _post(env, "/v2/pipelines/chain/infer", {"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    version = status(env, "pipeline", "status", "chain")["versions"][0]["state"]
    assert body.get("model_name", "") == ""
    assert headers["x-pipeline-version"] == str(version["pipelineVersion"])
    assert body["outputs"][0]["data"] == [110.0]

    # metadata: the version's name, its version, and the tensors the server knows
    env.load_model("declared", env.artifact, requirements=["mlserver"])
    with urllib.request.urlopen(f"{env.url}/v2/models/declared", timeout=30) as r:
        metadata = json.loads(r.read())
    assert (metadata["name"], metadata["versions"]) == ("declared_1", ["1"])
    assert {k: metadata[k] for k in TENSORS} == TENSORS


def test_requirements_no_server_offers_are_refused_at_load(env, tmp_path):
    manifest = tmp_path / "needs-tpu.yaml"
    manifest.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\n"
                        "metadata: {name: needs-tpu}\n"
                        "spec: {storageUri: ./models/iris, requirements: [sklearn, tpu]}\n")
    out = core2(env, "model", "load", "-f", str(manifest))
    assert out.returncode == 2
    assert "no server offers sklearn, tpu (mlserver lacks tpu)" in out.stderr
    assert "Traceback" not in out.stderr
    missing = core2(env, "model", "status", "needs-tpu")
    assert missing.returncode == 1 and "not found" in missing.stderr
