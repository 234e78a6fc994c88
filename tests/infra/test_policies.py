"""The policy pack's rules: silent on every shipped stack, firing on what breaks them."""

import copy
import json

import pytest

from infra.config import stack_values
from infra.policy.rules import (
    check_all,
    experiment_targets_exist,
    experiment_weights,
    image_pinned,
    images_pinned,
    model_requirements_satisfiable,
    no_open_load_balancer_in_production,
    resource_limits,
)
from tests.infra.harness import STACK_NAMES, STACKS, render_stack, render_values

RENDERS: dict = {}


def resources(stack: str, values: dict | None = None) -> list[tuple[str, dict]]:
    if values is not None:
        return [(r.type, r.inputs) for r in render_values(stack, values).resources]
    if stack not in RENDERS:
        RENDERS[stack] = [(r.type, r.inputs) for r in render_stack(stack).resources]
    return copy.deepcopy(RENDERS[stack])


def values(stack: str) -> dict:
    return json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))


def find(res, type_suffix: str, name: str) -> dict:
    return next(p for t, p in res if t.endswith(type_suffix)
                and (p.get("metadata", {}).get("name") == name or p.get("name") == name))


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_shipped_stacks_pass_every_policy(stack):
    assert check_all(resources(stack)) == {name: [] for name in check_all([])}


def test_images_must_be_pinned():
    assert image_pinned("envoyproxy/envoy:v1.40.0")
    assert image_pinned("ghcr.io/core2/core2@sha256:" + "a" * 64)
    assert not image_pinned("ghcr.io/core2/core2")
    assert not image_pinned("ghcr.io/core2/core2:latest")
    assert not image_pinned("registry.local:5000/core2")  # a port is not a tag
    cfg = values("staging")
    cfg["image"] = "ghcr.io/core2/core2:latest"
    violations = [v for t, p in resources("staging", cfg) for v in images_pinned(t, p)]
    # scheduler, two dataflow services (engine, pipeline gateway), the controller, the
    # mlserver server container and its agent
    assert len(violations) == 6 and all("latest" in v for v in violations)


def test_containers_need_limits():
    res = resources("prod-aws")
    envoy = find(res, ":Deployment", "envoy")
    del envoy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert resource_limits("kubernetes:apps/v1:Deployment", envoy) == [
        "core2/envoy: container envoy has no memory limit"]


def test_production_load_balancer_needs_source_ranges():
    cfg = values("prod-gcp")
    cfg["loadBalancerSourceRanges"] = []
    violations = [v for t, p in resources("prod-gcp", cfg)
                  for v in no_open_load_balancer_in_production(t, p)]
    assert violations == ["core2/envoy: a production LoadBalancer needs "
                          "loadBalancerSourceRanges"]
    cfg = values("staging")  # not production: an open LoadBalancer is allowed
    cfg["envoyServiceType"] = "LoadBalancer"
    assert not [v for t, p in resources("staging", cfg)
                for v in no_open_load_balancer_in_production(t, p)]


def test_experiment_weights_and_default():
    res = resources("staging")
    exp = find(res, ":Experiment", "iris-ab")
    exp["spec"]["candidates"][1]["weight"] = 0
    (msg,) = experiment_weights("pulumi-python:dynamic/core2:Experiment", exp)
    assert "candidates.1.weight" in msg
    exp["spec"]["candidates"][1]["weight"] = 10
    exp["spec"]["default"] = "iris3"
    (msg,) = experiment_weights("pulumi-python:dynamic/core2:Experiment", exp)
    assert "default" in msg and "iris3" in msg


def test_experiment_candidates_must_be_in_the_stack():
    res = resources("prod-gcp")
    find(res, ":Experiment", "iris-ab")["spec"]["candidates"][1]["name"] = "iris9"
    assert experiment_targets_exist(res) == [
        "experiment iris-ab: model(s) iris9 are not in this stack"]


def test_model_requirements_must_fit_a_server():
    res = resources("staging")
    iris = find(res, ":Model", "iris")
    iris["spec"]["requirements"] = ["tensorflow"]
    (msg,) = model_requirements_satisfiable(res)
    assert msg.startswith("model iris: no server offers requirements ['tensorflow']")
    # prod-aws has a Triton pool, which runs tensorflow
    res = resources("prod-aws")
    find(res, ":Model", "iris")["spec"]["requirements"] = ["tensorflow"]
    assert model_requirements_satisfiable(res) == []
    # more memory than any replica offers, even over-committed
    find(res, ":Model", "iris")["spec"]["memory"] = "40Gi"
    assert "no server offers" in model_requirements_satisfiable(res)[0]
    find(res, ":Model", "iris")["spec"].update(memory="1Gi", server="gpu-pool")
    assert model_requirements_satisfiable(res) == [
        "model iris: server 'gpu-pool' is not in this stack"]


def test_pack_reports_through_pulumi_policy_objects():
    """The pack's wiring: each Pulumi policy passes its args to the rule and reports back."""
    from types import SimpleNamespace

    from pulumi_policy import ResourceValidationPolicy

    from infra.policy.pack import policies

    pack = {p.name: p for p in policies()}
    assert set(pack) == set(check_all([]))
    res = resources("prod-gcp")
    svc = find(res, ":Service", "envoy")
    svc["spec"].pop("loadBalancerSourceRanges")
    reported = []
    policy = pack["core2-no-open-load-balancer-in-production"]
    assert isinstance(policy, ResourceValidationPolicy)
    policy.validate(SimpleNamespace(resource_type="kubernetes:core/v1:Service", props=svc),
                    lambda message, urn=None: reported.append(message))
    assert reported == ["core2/envoy: a production LoadBalancer needs loadBalancerSourceRanges"]
    find(res, ":Experiment", "iris-ab")["spec"]["candidates"][0]["name"] = "ghost"
    reported = []
    pack["core2-experiment-targets-exist"].validate(
        SimpleNamespace(resources=[SimpleNamespace(resource_type=t, props=p) for t, p in res]),
        lambda message, urn=None: reported.append(message))
    assert reported == ["experiment iris-ab: model(s) ghost are not in this stack"]
