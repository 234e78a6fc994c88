"""A stack's `tracing` reaches every part that makes spans: Envoy's bootstrap (its OpenTelemetry
tracer and a cluster for the collector), the dataflow services and MLServer (the OTLP endpoint
in their environment); without it nothing traces."""

import json

import pytest

from infra.config import stack_values
from runtime.specs.common import SpecError
from tests.infra.harness import STACKS, render_values

TRACING = {"otlpEndpoint": "otel-collector.observability:4317", "samplePercent": 10}
ENDPOINT = {"name": "OTEL_EXPORTER_OTLP_ENDPOINT",
            "value": "http://otel-collector.observability:4317"}


def _values() -> dict:
    return json.loads(json.dumps(stack_values(STACKS / "Pulumi.staging.yaml")))


def _containers(render, kind: str, name: str) -> dict[str, dict]:
    (obj,) = [o.manifest for o in render.kubernetes_objects()
              if (o.manifest["kind"], o.manifest["metadata"]["name"]) == (kind, name)]
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


def _envoy_hcm(render) -> tuple[dict, list[str]]:
    (cm,) = [o.manifest for o in render.kubernetes_objects()
             if o.manifest["kind"] == "ConfigMap"
             and o.manifest["metadata"]["name"].startswith("envoy-bootstrap-")]
    boot = json.loads(cm["data"]["envoy.json"])
    return boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"], [c["name"] for c in boot["static_resources"]["clusters"]]


def test_stack_tracing_reaches_envoy_the_dataflow_and_mlserver():
    render = render_values("staging", {**_values(), "tracing": TRACING})
    hcm, clusters = _envoy_hcm(render)
    assert hcm["tracing"]["random_sampling"] == {"value": 10}
    assert "otlp_collector" in clusters
    for service in ("engine", "pipelinegateway"):
        assert ENDPOINT in _containers(render, "Deployment", service)[service]["env"]
    mlserver = _containers(render, "StatefulSet", "mlserver")["mlserver"]
    assert ENDPOINT in mlserver["env"]


def test_without_tracing_nothing_traces():
    render = render_values("staging", _values())
    hcm, clusters = _envoy_hcm(render)
    assert "tracing" not in hcm and "otlp_collector" not in clusters
    env = _containers(render, "Deployment", "engine")["engine"]["env"]
    assert not any(e["name"] == ENDPOINT["name"] for e in env)


def test_a_bad_endpoint_names_the_field():
    with pytest.raises(SpecError, match=r"tracing\.otlpEndpoint"):
        render_values("staging", {**_values(), "tracing": {"otlpEndpoint": "no port"}})
