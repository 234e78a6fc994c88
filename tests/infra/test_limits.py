"""A stack's `limits` reach every part that enforces them: the scheduler (per-model overload
limits it sends Envoy), Envoy's bootstrap (REST body size) and the pipeline gateway."""

import json

import pytest

from infra.config import stack_values
from runtime.specs.common import SpecError
from tests.infra.harness import STACKS, render_values

LIMITS = {"maxRequestBytes": 1_048_576, "serverMaxRequests": 7, "serverMaxPendingRequests": 3}


def _values() -> dict:
    return json.loads(json.dumps(stack_values(STACKS / "Pulumi.staging.yaml")))


def _args(render, kind: str, name: str) -> list[str]:
    (obj,) = [o.manifest for o in render.kubernetes_objects()
              if (o.manifest["kind"], o.manifest["metadata"]["name"]) == (kind, name)]
    return obj["spec"]["template"]["spec"]["containers"][0]["args"]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_stack_limits_reach_scheduler_envoy_and_pipeline_gateway():
    render = render_values("staging", {**_values(), "limits": LIMITS})
    scheduler = _args(render, "StatefulSet", "scheduler")
    assert _flag(scheduler, "--server-max-requests") == "7"
    assert _flag(scheduler, "--server-max-pending-requests") == "3"
    assert _flag(_args(render, "Deployment", "pipelinegateway"), "--max-request-bytes") == \
        "1048576"
    (cm,) = [o.manifest for o in render.kubernetes_objects()
             if o.manifest["kind"] == "ConfigMap"
             and o.manifest["metadata"]["name"].startswith("envoy-bootstrap-")]
    boot = json.loads(cm["data"]["envoy.json"])
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    (buffer,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer"]
    assert buffer["typed_config"]["max_request_bytes"] == 1_048_576
    assert hcm["local_reply_config"]["mappers"]  # Envoy's own errors in the OIP shape


def test_bad_limits_name_the_field():
    with pytest.raises(SpecError, match=r"limits\.serverMaxRequests"):
        render_values("staging", {**_values(), "limits": {"serverMaxRequests": 0}})
    with pytest.raises(SpecError, match=r"limits\.maxRequests: unknown field"):
        render_values("staging", {**_values(), "limits": {"maxRequests": 5}})
