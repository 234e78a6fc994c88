"""A Pulumi-deployed server with `autoscaling`: its bounds reach the scheduler as a Server CR
(the controller applies it and scales the StatefulSet), the scheduler's server autoscaling is
switched on, and Pulumi creates the StatefulSet's count but never sets it back."""

import json

import pytest

from components import Server, ServerArgs
from infra.config import stack_values
from runtime.controller.kube import REPLICAS_FROM
from tests.infra.harness import STACKS, render_values, run_program

BOUNDS = {"minReplicas": 2, "maxReplicas": 4}


def _values(**server) -> dict:
    values = json.loads(json.dumps(stack_values(STACKS / "Pulumi.staging.yaml")))
    values["servers"][0].update(server)
    return values


def _object(render, kind: str, name: str):
    (obj,) = [o for o in render.kubernetes_objects()
              if (o.manifest["kind"], o.manifest["metadata"]["name"]) == (kind, name)]
    return obj


def _scheduler_flags(render) -> list[str]:
    return _object(render, "StatefulSet", "scheduler").manifest["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_an_autoscaled_server_carries_its_bounds_to_the_scheduler_and_leaves_replicas_alone():
    render = render_values("staging", _values(autoscaling=BOUNDS))
    sts = _object(render, "StatefulSet", "mlserver")
    # created at the floor (replicas: 1 is below it), then the scheduler's count via the
    # controller: Pulumi ignores later changes to it, and marks it as the scheduler's
    assert sts.manifest["spec"]["replicas"] == 2
    assert "spec.replicas" in sts.ignore_changes
    key, value = REPLICAS_FROM
    assert sts.manifest["metadata"]["annotations"][key] == value

    cr = _object(render, "Server", "mlserver")
    assert cr.manifest["apiVersion"] == "mlops.seldon.io/v1alpha1"
    spec = cr.manifest["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"], spec["replicas"]) == (2, 4, 2)
    assert (spec["serverConfig"], spec["memory"], spec["overCommitPercentage"]) == \
        ("mlserver", "2Gi", 20)
    assert "sklearn" in spec["capabilities"]

    flags = _scheduler_flags(render)
    assert json.loads(flags[flags.index("--autoscale-json") + 1]) == {"servers": True}


def test_a_server_without_autoscaling_keeps_pulumis_count_and_no_server_cr():
    render = render_values("staging", _values(replicas=3))
    sts = _object(render, "StatefulSet", "mlserver")
    assert sts.manifest["spec"]["replicas"] == 3 and "spec.replicas" not in sts.ignore_changes
    assert REPLICAS_FROM[0] not in (sts.manifest["metadata"].get("annotations") or {})
    assert not [o for o in render.kubernetes_objects() if o.manifest["kind"] == "Server"]
    assert "--autoscale-json" not in _scheduler_flags(render)


def _server(**kwargs) -> None:
    args = ServerArgs(name="cpu", namespace="ml", image="core2:test", **kwargs)
    run_program("dev", lambda: Server("cpu", args) and {})


@pytest.mark.parametrize("kwargs,error", [
    ({"hpa": {"maxReplicas": 3}, "autoscaling": BOUNDS},
     r"servers\[cpu\]\.autoscaling and servers\[cpu\]\.hpa: give one, not both"),
    ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
     r"servers\[cpu\]\.autoscaling\.minReplicas: 3 must be a whole number from 1 to "
     r"maxReplicas \(2\)"),
    ({"autoscaling": {"minReplicas": 1}}, r"servers\[cpu\]\.autoscaling\.maxReplicas: None"),
    ({"autoscaling": {"maxReplicas": 2, "cpuUtilization": 70}},
     r"servers\[cpu\]\.autoscaling: unknown key\(s\) cpuUtilization"),
])
def test_bad_autoscaling_is_refused_naming_the_field(kwargs, error):
    with pytest.raises(ValueError, match=error):
        _server(**kwargs)
