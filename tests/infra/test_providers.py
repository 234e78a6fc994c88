"""The dynamic providers' create / read / diff / update / delete against a real local
platform (scheduler, Envoy, MLServer + agent, broker and dataflow services), called directly
as the Pulumi engine would."""

import pytest

from components.providers import ExperimentProvider, ModelProvider, PipelineProvider
from runtime.client import SchedulerError
from runtime.local.config import LocalConfig, LocalServer, Ports
from runtime.local.platform import Platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory, sample_models):
    cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=True,
                      servers=[LocalServer(name="mlserver")])
    p = Platform(tmp_path_factory.mktemp("pulumi-providers"), cfg).start()
    try:
        yield p
    finally:
        p.stop()


def props(platform, name: str, spec: dict, **extra) -> dict:
    return {"name": name, "spec": spec, "scheduler": {"address": platform.scheduler_address},
            "timeoutSeconds": 180, "retryGraceSeconds": 2, **extra}


def iris_spec(sample_models, model: str = "iris", **extra) -> dict:
    return {"storageUri": str(sample_models / model), "requirements": ["sklearn"],
            "memory": "100Ki", **extra}


def test_check_refuses_a_bad_spec_naming_the_field():
    result = ModelProvider().check({}, {"name": "m", "spec": {"storageUri": "x", "replicas": -1}})
    (failure,) = result.failures
    assert failure.property == "spec" and "replicas" in failure.reason


def test_model_lifecycle(platform, sample_models):
    provider = ModelProvider()
    created = provider.create(props(platform, "iris", iris_spec(sample_models)))
    assert created.id == "model/iris"
    outs = created.outs
    assert outs["ready"] and outs["state"] == "ModelAvailable" and outs["version"] >= 1

    read = provider.read(created.id, outs)
    assert read.id == created.id and read.outs["ready"]
    assert read.outs["spec"]["storageUri"] == str(sample_models / "iris")

    # scaling is an update in place without a new version; a new artifact is a new version
    scaled = props(platform, "iris", iris_spec(sample_models, replicas=1))
    diff = provider.diff(created.id, outs, scaled)
    assert diff.changes and diff.replaces == []
    from components.providers import spec_changes

    assert spec_changes("Model", outs["spec"], scaled["spec"]) == (["replicas"], False)
    new_artifact = props(platform, "iris", iris_spec(sample_models, "iris2"))
    assert spec_changes("Model", outs["spec"], new_artifact["spec"]) == (["storageUri"], True)
    assert provider.diff(created.id, outs, dict(outs)).changes is False

    updated = provider.update(created.id, outs, new_artifact).outs
    assert updated["ready"] and updated["version"] > outs["version"]

    provider.delete(created.id, updated)
    assert provider.read(created.id, updated).id is None


def test_failing_model_reports_the_scheduler_reason(platform, tmp_path):
    with pytest.raises(SchedulerError) as err:
        ModelProvider().create(props(platform, "broken", {
            "storageUri": str(tmp_path / "no-such-model"), "requirements": ["sklearn"]}))
    message = str(err.value)
    assert message.startswith("Model broken: ModelFailed:") and "no-such-model" in message
    # the failed create is not left behind in the scheduler
    assert ModelProvider().read("model/broken", props(platform, "broken", {})).id is None


def test_model_no_server_can_run_is_refused_at_create(platform, sample_models):
    refused = r"Model gpu-only: spec.requirements: .*tensorflow.*FAILED_PRECONDITION"
    with pytest.raises(SchedulerError, match=refused):
        ModelProvider().create(props(platform, "gpu-only", iris_spec(
            sample_models, requirements=["tensorflow"])))
    assert ModelProvider().read("model/gpu-only", props(platform, "gpu-only", {})).id is None


def test_experiment_over_a_missing_model_fails_with_the_reason(platform):
    spec = {"default": "iris", "candidates": [{"name": "iris", "weight": 1},
                                              {"name": "ghost", "weight": 1}]}
    with pytest.raises(SchedulerError, match=r"Experiment ab: ExperimentWaiting: .*ghost"):
        ExperimentProvider().create(props(platform, "ab", spec))


def test_invalid_spec_is_refused_with_field_and_reason(platform):
    with pytest.raises(SchedulerError, match=r"INVALID_ARGUMENT"):
        ExperimentProvider().create(props(platform, "bad-exp", {
            "default": "a", "candidates": [{"name": "b", "weight": 1}]}))


def test_experiment_lifecycle(platform, sample_models):
    models = ModelProvider()
    for name in ("iris", "iris2"):
        models.create(props(platform, name, iris_spec(sample_models, name)))
    provider = ExperimentProvider()
    spec = {"default": "iris", "candidates": [{"name": "iris", "weight": 50},
                                              {"name": "iris2", "weight": 50}]}
    outs = provider.create(props(platform, "iris-ab", spec)).outs
    assert outs["ready"]
    shifted = {**spec, "candidates": [{"name": "iris", "weight": 10},
                                      {"name": "iris2", "weight": 90}]}
    diff = provider.diff("experiment/iris-ab", outs, props(platform, "iris-ab", shifted))
    assert diff.changes and diff.replaces == []
    updated = provider.update("experiment/iris-ab", outs, props(platform, "iris-ab", shifted))
    assert updated.outs["ready"]
    read = provider.read("experiment/iris-ab", updated.outs)
    assert [c["weight"] for c in read.outs["spec"]["candidates"]] == [10, 90]
    provider.delete("experiment/iris-ab", updated.outs)
    assert provider.read("experiment/iris-ab", updated.outs).id is None
    for name in ("iris", "iris2"):
        models.delete(f"model/{name}", props(platform, name, {}))


def test_pipeline_lifecycle(platform, sample_models):
    assert PipelineProvider().check({}, {"name": "p", "spec": {"steps": []}}).failures
    models = ModelProvider()
    for name in ("iris", "iris2"):
        models.create(props(platform, name, iris_spec(sample_models, name)))
    provider = PipelineProvider()
    spec = {"steps": [{"name": "iris"}], "output": {"steps": ["iris"]}}
    outs = provider.create(props(platform, "iris-pipe", spec)).outs
    assert outs["ready"] and outs["state"] == "PipelineReady"

    rerouted = {"steps": [{"name": "iris2"}], "output": {"steps": ["iris2"]}}
    from components.providers import spec_changes

    fields, new_version = spec_changes("Pipeline", spec, rerouted)
    assert fields == ["output.steps[0]", "steps[0].name"] and new_version
    assert provider.diff("pipeline/iris-pipe", outs,
                         props(platform, "iris-pipe", rerouted)).replaces == []
    updated = provider.update("pipeline/iris-pipe", outs,
                              props(platform, "iris-pipe", rerouted)).outs
    assert updated["ready"] and updated["version"] > outs["version"]
    read = provider.read("pipeline/iris-pipe", updated)
    assert read.outs["spec"]["steps"][0]["name"] == "iris2"

    provider.delete("pipeline/iris-pipe", updated)
    assert provider.read("pipeline/iris-pipe", updated).id is None
    for name in ("iris", "iris2"):
        models.delete(f"model/{name}", props(platform, name, {}))


def test_pipeline_over_a_missing_model_fails_after_the_grace_period(platform):
    # the scheduler accepts a pipeline before its models (as Seldon does); a create whose
    # models do not come within retryGraceSeconds fails with the reason and is undone
    with pytest.raises(SchedulerError, match=r"Pipeline lost: PipelineCreating: waiting for "
                                             r"model\(s\) ghost \(not loaded\)"):
        PipelineProvider().create(props(platform, "lost", {"steps": [{"name": "ghost"}]}))
    assert PipelineProvider().read("pipeline/lost", props(platform, "lost", {})).id is None


def test_port_forward_carries_the_scheduler_api(platform, sample_models, monkeypatch):
    """The cluster path: the provider opens a local port whose connections go through a
    Kubernetes port-forward stream to pod scheduler-0. The API server's websocket is stood in
    for by a plain socket to the real scheduler; the proxying and gRPC over it are real."""
    import socket

    import kubernetes.stream

    from components import portforward

    port = int(platform.scheduler_address.rsplit(":", 1)[1])
    opened = []

    class Stream:
        def __init__(self, pod, namespace, ports):
            opened.append((pod, namespace, ports))
            self.sock = socket.create_connection(("127.0.0.1", port))

        def socket(self, _port):
            return self.sock

        def close(self):
            self.sock.close()

    monkeypatch.setattr(portforward, "api_client", lambda kubeconfig, context: None)
    monkeypatch.setattr(kubernetes.stream, "portforward",
                        lambda _fn, pod, namespace, ports: Stream(pod, namespace, ports))
    conn = {"kubeconfig": "/home/ci/.kube/config", "context": "staging",
            "namespace": "core2-staging", "pod": "scheduler-0", "port": 9004}
    provider = ModelProvider()
    spec = iris_spec(sample_models)
    outs = provider.create({**props(platform, "iris-pf", spec), "scheduler": conn}).outs
    assert outs["ready"]
    provider.delete("model/iris-pf", outs)
    assert opened and set(opened) == {("scheduler-0", "core2-staging", "9004")}


def test_local_stack_deploys_to_a_real_core2_up(platform):
    """The `local` stack as `pulumi up` would run it: render the program, then hand each
    captured resource's inputs to the provider serialized with it, in dependency order."""
    import base64

    import dill

    from infra.config import stack_values
    from tests.infra.harness import STACKS, render_values

    values = stack_values(STACKS / "Pulumi.local.yaml")
    values["schedulerAddress"] = platform.scheduler_address
    render = render_values("local", values)
    created = []
    for r in render.of_type("pulumi-python:dynamic/core2:"):
        provider = dill.loads(base64.b64decode(r.inputs.pop("__provider")))
        assert type(provider).__name__ == r.type.rsplit(":", 1)[1] + "Provider"
        result = provider.create(r.inputs)
        assert result.outs["ready"], result.outs
        created.append((provider, result))
    ids = [res.id for _, res in created]
    # Resources register concurrently (either order within a kind), but models always come
    # before the pipeline and experiment that depend on them.
    assert sorted(ids[:2]) == ["model/iris", "model/iris2"]
    assert sorted(ids[2:]) == ["experiment/iris-ab", "pipeline/iris-pipeline"]
    for provider, result in reversed(created):
        provider.delete(result.id, result.outs)
