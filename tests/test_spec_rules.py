"""Spec rules: names unique across Models, Pipelines and Experiments; bounded integer weights;
no experiment naming itself; no pipeline feeding on its own data; deep JSON/YAML refused with
INVALID_ARGUMENT (not UNKNOWN RecursionError) by a scheduler that keeps running, and by the
CLI without a traceback; Seldon fields core2 does not act on refused unless left at their
default (README "Seldon fields and what core2 does with each"). Each refusal names the
field."""

import json
import sys

import grpc
import pytest

from runtime.client import SchedulerClient, SchedulerError
from runtime.pb import scheduler_pb2, scheduler_pb2_grpc
from runtime.procs import Service, free_port, python_module, tcp_open, wait_until
from runtime.specs import SpecError
from runtime.specs.manifest import load_manifests, parse_spec
from tests.test_cli import core2

DEEP = 100_000


def _exp(**spec) -> str:
    return json.dumps({"candidates": [{"name": "a", "weight": 1}], **spec})


@pytest.mark.parametrize("weight, says", [
    (0, "greater than or equal to 1"), (10**30, "less than or equal to 1000000"),
    (1_000_001, "less than or equal to 1000000"), (1.5, "valid integer"),
    ("ten", "valid integer"),
])
def test_experiment_weights_are_bounded_integers(weight, says):
    spec = json.dumps({"candidates": [{"name": "a", "weight": weight}]})
    with pytest.raises(SpecError, match=rf"spec\.candidates\.0\.weight: .*{says}"):
        parse_spec("Experiment", "exp", spec)
    parse_spec("Experiment", "exp", json.dumps({"candidates": [{"name": "a",
                                                                 "weight": 1_000_000}]}))


@pytest.mark.parametrize("spec, field", [
    ({"default": "exp", "candidates": [{"name": "exp", "weight": 1}]}, r"spec\.default"),
    ({"candidates": [{"name": "a", "weight": 1}, {"name": "exp", "weight": 1}]},
     r"spec\.candidates\[1\]\.name"),
    ({"candidates": [{"name": "a", "weight": 1}], "mirror": {"name": "exp"}},
     r"spec\.mirror\.name"),
])
def test_an_experiment_may_not_name_itself(spec, field):
    with pytest.raises(SpecError, match=rf"{field}: an experiment may not name itself"):
        parse_spec("Experiment", "exp", json.dumps(spec))
    manifest = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment",
                "metadata": {"name": "exp"}, "spec": spec}
    with pytest.raises(SpecError, match=field):
        load_manifests(json.dumps(manifest))


@pytest.mark.parametrize("field, ref", [
    ("externalInputs", "p.outputs"), ("externalInputs", "p.inputs.x"),
    ("externalTriggers", "p.step.m.outputs"),
])
def test_a_pipeline_may_not_take_its_own_data_as_external_input(field, ref):
    spec = {"input": {field: [ref]}, "steps": [{"name": "m"}]}
    with pytest.raises(SpecError, match=rf"input\.{field}\[0\]: '{ref}' is this pipeline's "
                                        "own"):
        parse_spec("Pipeline", "p", json.dumps(spec))
    parse_spec("Pipeline", "other", json.dumps(spec))  # someone else's is fine


def test_deep_json_and_yaml_are_refused_by_name():
    deep_json = '{"storageUri": "/x", "explainer": ' + "[" * DEEP + "]" * DEEP + "}"
    with pytest.raises(SpecError, match=r"Model m: spec: nested deeper than 64 levels"):
        parse_spec("Model", "m", deep_json)
    deep_yaml = "kind: Model\nspec: " + "[" * DEEP + "]" * DEEP + "\n"
    with pytest.raises(SpecError, match=r"deep\.yaml: nested deeper than 64 levels"):
        load_manifests(deep_yaml, "deep.yaml")
    block = "spec:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))
    with pytest.raises(SpecError, match="nested deeper than 64 levels"):
        load_manifests(block, "block.yaml")
    # a string full of brackets is not nesting
    parse_spec("Model", "m", json.dumps({"storageUri": "[" * DEEP}))


# Seldon fields core2 does not act on: (kind, field, a value Seldon's docs show, the reason)
UNSUPPORTED = [
    ("Model", "schemaUri", "gs://models/iris/schema.json", "model schemas are not fetched"),
    ("Model", "preloaded", True, "preloading is not supported"),
    ("Model", "dedicated", True, "dedicated servers are not supported"),
    ("Model", "explainer", {"type": "anchor_tabular", "modelRef": "iris"},
     "explainers are not supported by core2; deploy the explainer as its own Model"),
    ("Model", "logger", {"percent": 100}, "request logging is not supported"),
    ("Model", "llm", {"modelRef": "chat"}, "Seldon's LLM module is not part of core2"),
    ("Model", "dataflow", {"cleanTopicsOnDelete": True}, "a model's topics are kept"),
    ("Model", "secretName", "s3-creds", "per-model storage secrets are not supported"),
    ("Pipeline", "dataflow", {"cleanTopicsOnDelete": True}, "a pipeline's topics are kept"),
    ("Pipeline", "steps.0.batch.rolling", True, "rolling batches are not supported"),
    ("Server", "podSpec", {"nodeSelector": {"gpu": "a100"}}, "set them on the Pulumi component"),
    ("Server", "scaling", {"replicas": 2}, "use replicas, minReplicas and maxReplicas"),
    ("Server", "statefulSetPersistentVolumeClaimRetentionPolicy", {"whenDeleted": "Delete"},
     "made by the Pulumi component"),
]
# what a Seldon manifest writes for each of them when it leaves them at their default
DEFAULTS = {"schemaUri": "", "preloaded": False, "dedicated": False, "explainer": {},
            "logger": None, "llm": {}, "dataflow": {"cleanTopicsOnDelete": False},
            "secretName": "", "steps.0.batch.rolling": False, "podSpec": {}, "scaling": {},
            "statefulSetPersistentVolumeClaimRetentionPolicy": None}
BASE = {"Model": {"storageUri": "/x"}, "Server": {},
        "Pipeline": {"steps": [{"name": "m", "batch": {"size": 2}}]}}


def _with(kind: str, field: str, value) -> dict:
    """BASE[kind] with `field` (a dotted path) set to `value`."""
    spec = json.loads(json.dumps(BASE[kind]))
    *path, last = field.split(".")
    target = spec
    for key in path:
        target = target[int(key)] if key.isdigit() else target[key]
    target[last] = value
    return spec


@pytest.mark.parametrize(("kind", "field", "value", "reason"), UNSUPPORTED)
def test_unsupported_seldon_fields_are_refused_naming_the_field(kind, field, value, reason):
    with pytest.raises(SpecError) as e:
        parse_spec(kind, "r", json.dumps(_with(kind, field, value)))
    assert f"{kind} r: spec.{field}: " in str(e.value) and reason in str(e.value), str(e.value)


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, f, _, _ in UNSUPPORTED])
def test_unsupported_seldon_fields_at_their_default_load_unchanged(kind, field):
    parse_spec(kind, "r", json.dumps(_with(kind, field, DEFAULTS[field])))


def test_a_seldon_manifest_with_every_field_at_its_default_loads():
    [model, server] = load_manifests("""
apiVersion: mlops.seldon.io/v1alpha1
kind: Model
metadata: {name: iris}
spec:
  storageUri: gs://seldon-models/scv2/samples/mlserver_1.3.5/iris-sklearn
  requirements: [sklearn]
  memory: 100Ki
  preloaded: false
  dedicated: false
  secretName: ""
  dataflow: {cleanTopicsOnDelete: false}
---
apiVersion: mlops.seldon.io/v1alpha1
kind: Server
metadata: {name: mlserver}
spec: {serverConfig: mlserver, replicas: 1, disableAutoUpdate: true}
""")
    assert (model.spec.memory_bytes, model.spec.requirements) == (102400, ["sklearn"])
    assert server.spec.all_capabilities()[0] == "alibi-detect"


# ---- against a real scheduler -------------------------------------------------------------
@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scheduler")
    ports = {k: free_port() for k in ("api", "agent", "xds")}
    svc = Service("scheduler", python_module(
        "runtime.scheduler", "--data-dir", str(tmp / "data"), "--api-port", str(ports["api"]),
        "--agent-port", str(ports["agent"]), "--xds-port", str(ports["xds"])),
        tmp / "logs").start()
    try:
        wait_until(lambda: tcp_open(ports["api"]), 30, "the scheduler API", svc)
        yield svc, f"127.0.0.1:{ports['api']}"
    finally:
        svc.stop()


def _refused(client: SchedulerClient, kind: str, name: str, spec: str) -> str:
    with pytest.raises(SchedulerError) as e:
        client.apply(kind, name, spec)
    assert e.value.invalid, str(e.value)
    return str(e.value)


def test_names_are_unique_across_models_pipelines_and_experiments(scheduler):
    _, address = scheduler
    client = SchedulerClient(address)
    client.apply("Model", "shared", json.dumps({"storageUri": "/x"}))
    client.apply("Model", "step", json.dumps({"storageUri": "/x"}))
    pipeline = json.dumps({"steps": [{"name": "step"}]})
    says = "metadata.name: 'shared' is already a Model"
    assert says in _refused(client, "Pipeline", "shared", pipeline)
    assert says in _refused(client, "Experiment", "shared", _exp())
    client.apply("Pipeline", "pipe", pipeline)
    assert "'pipe' is already a Pipeline" in _refused(
        client, "Model", "pipe", json.dumps({"storageUri": "/x"}))
    client.apply("Experiment", "exp", _exp())
    assert "'exp' is already a Experiment" in _refused(client, "Pipeline", "exp", pipeline)
    # updating a resource under its own name is not a clash
    client.apply("Model", "shared", json.dumps({"storageUri": "/y"}))
    # once deleted, the name is free for another kind
    client.delete("Experiment", "exp")
    client.apply("Pipeline", "exp", pipeline)


def test_deep_json_over_the_api_is_invalid_argument_and_the_scheduler_lives(scheduler):
    svc, address = scheduler
    stub = scheduler_pb2_grpc.SchedulerStub(grpc.insecure_channel(address))
    deep = '{"storageUri": "/x", "explainer": ' + "{\"a\": " * DEEP + "1" + "}" * DEEP + "}"
    for spec in (deep, "[" * DEEP):
        with pytest.raises(grpc.RpcError) as e:
            stub.Apply(scheduler_pb2.ApplyRequest(kind=scheduler_pb2.MODEL, name="deep",
                                                  spec_json=spec), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "nested deeper than 64 levels" in e.value.details()
    assert svc.alive()
    SchedulerClient(address).apply("Model", "after", json.dumps({"storageUri": "/x"}))


def test_the_scheduler_refuses_an_unsupported_field_by_name(scheduler):
    _, address = scheduler
    client = SchedulerClient(address)
    says = _refused(client, "Model", "explained", json.dumps(
        {"storageUri": "/x", "explainer": {"type": "anchor_tabular", "modelRef": "iris"}}))
    assert "spec.explainer: explainers are not supported by core2" in says, says
    client.apply("Model", "explained", json.dumps({"storageUri": "/x", "explainer": {}}))


def test_cli_refuses_an_unsupported_field_without_a_traceback(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n"
                        "  name: m\nspec:\n  storageUri: /x\n  dedicated: true\n")
    out = core2(tmp_path / "run", "--scheduler", "127.0.0.1:1", "apply", "-f", str(manifest),
                timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Model m: spec.dedicated: dedicated servers are not supported" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_refuses_a_deep_manifest_without_a_traceback(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Model\nmetadata:\n  name: m\n"
                    "spec: " + "[" * DEEP + "]" * DEEP + "\n")
    out = core2(tmp_path / "run", "--scheduler", "127.0.0.1:1", "apply", "-f", str(deep),
                timeout=60)
    assert out.returncode == 2, out.stderr
    assert "nested deeper than 64 levels" in out.stderr
    assert "Traceback" not in out.stderr
    assert sys.getrecursionlimit() < DEEP  # the input really is deeper than Python recurses
