"""Adaptive experiments in Pulumi: the strategy is part of the Experiment object a preview
shows, a bad one is refused at preview naming the field, and production stacks must leave
every candidate a minimum weight; the scheduler and Envoy get the feedback wiring."""

import json

import pytest

from infra.config import stack_values
from infra.policy.rules import check_all, production_adaptive_min_weight
from runtime.specs.common import SpecError
from tests.infra.harness import STACKS, render_values

RULE = "core2-production-adaptive-min-weight"


def _values(stack: str, strategy: dict) -> dict:
    values = json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))
    [exp] = [e for e in values["experiments"] if e["name"] == "iris-ab"]
    exp["spec"]["strategy"] = strategy
    return values


def _render(stack: str, strategy: dict) -> list[tuple[str, dict]]:
    return [(r.type, r.inputs) for r in render_values(stack, _values(stack, strategy)).resources]


def test_strategy_is_in_the_experiment_object_and_production_needs_a_min_weight():
    res = _render("prod-gcp", {"type": "thompson", "minWeight": 2, "updateIntervalMs": 5000})
    [exp] = [p for t, p in res if t.endswith(":Experiment")]
    # as validated: the preview shows every parameter the scheduler will use
    assert exp["spec"]["strategy"] == {"type": "thompson", "minWeight": 2,
                                       "updateIntervalMs": 5000, "epsilon": 0.1,
                                       "exploration": 2, "labelRewards": {"good": 1, "bad": 0}}
    assert check_all(res)[RULE] == [
        "experiment iris-ab: strategy.minWeight 2 is below 5, the least a production stack "
        "lets a candidate keep"]
    res = _render("prod-gcp", {"type": "ucb1"})  # the default minWeight (5) is enough
    assert production_adaptive_min_weight(res) == []
    assert production_adaptive_min_weight(_render("staging", {"type": "ucb1",
                                                              "minWeight": 0})) == []


def test_a_bad_strategy_is_refused_at_preview():
    with pytest.raises(SpecError, match=r"experiments\[0\]\.spec\.strategy\.type: Input "):
        _render("staging", {"type": "greedy"})


def test_scheduler_serves_feedback_and_envoy_may_reach_it():
    res = _render("staging", {"type": "ucb1"})
    [sts] = [p for t, p in res if t.endswith(":StatefulSet")
             and p["metadata"]["name"] == "scheduler"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]

    def flag(name: str) -> str:
        return args[args.index(name) + 1]

    assert (flag("--feedback-http-port"), flag("--feedback-grpc-port")) == ("9012", "9013")
    assert flag("--feedback-host").startswith("scheduler.")
    # feedback also goes to the dataflow's Kafka, with the same client settings
    assert "--feedback-kafka" in args and flag("--kafka-bootstrap").endswith(":9092")
    assert "KAFKA_SECURITY_PROTOCOL" in {e["name"] for e in container["env"]}
    [policy] = [p for t, p in res if t.endswith(":NetworkPolicy")
                and p["metadata"]["name"] == "core2-scheduler"]
    from_envoy = [r for r in policy["spec"]["ingress"]
                  if r.get("from", [{}])[0].get("podSelector", {}).get("matchLabels", {})
                  .get("app.kubernetes.io/name") == "envoy"]
    assert {p["port"] for p in from_envoy[0]["ports"]} == {9002, 9012, 9013}
