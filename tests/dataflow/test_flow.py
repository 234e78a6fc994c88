"""The engine's routing and join logic, without a broker (fast, deterministic windows)."""

from runtime.dataflow.flow import Dataflow
from runtime.dataflow.plan import build_plan
from runtime.specs.pipeline import PipelineSpec


def flow_for(name: str, spec: dict) -> Dataflow:
    f = Dataflow()
    f.set_plan(build_plan(name, 1, PipelineSpec.parse(spec)))
    return f


def t(name, value):
    return {"name": name, "datatype": "FP32", "shape": [1], "data": [value]}


def names(emits):
    return [(e.kind, e.step, [x["name"] for x in e.tensors]) for e in emits]


def test_outer_join_fires_on_window_end_with_what_arrived():
    f = flow_for("p", {"steps": [{"name": "a"}, {"name": "b"},
                                 {"name": "c", "inputs": ["a", "b"], "inputsJoinType": "outer",
                                  "joinWindowMs": 100}]})
    assert f.on_event(("p", "a", "outputs"), "k", [t("A", 1)], now=0.0) == []
    assert f.expire(0.05) == []
    assert names(f.expire(0.11)) == [("step", "c", ["A"])]
    assert f.on_event(("p", "b", "outputs"), "k", [t("B", 2)], now=0.2) == []  # new window


def test_inner_join_drops_a_lone_side_when_its_window_ends():
    f = flow_for("p", {"steps": [{"name": "a"}, {"name": "b"},
                                 {"name": "c", "inputs": ["a", "b"], "joinWindowMs": 100}]})
    f.on_event(("p", "a", "outputs"), "k", [t("A", 1)], now=0.0)
    assert f.expire(1.0) == []
    f.on_event(("p", "a", "outputs"), "k2", [t("A", 1)], now=2.0)
    assert names(f.on_event(("p", "b", "outputs"), "k2", [t("B", 1)], now=2.01)) == [
        ("step", "c", ["A", "B"])]


def test_step_inputs_reference_and_cycles_bounded_by_revisits():
    f = flow_for("p", {"steps": [{"name": "a", "inputs": ["p.inputs", "b"],
                                  "inputsJoinType": "any"},
                                 {"name": "b", "inputs": ["a.inputs"]}],
                       "allowCycles": True, "maxStepRevisits": 2})
    fired = names(f.on_event(("p", None, "inputs"), "k", [t("x", 1)], now=0.0))
    assert fired == [("step", "a", ["x"]), ("step", "b", ["x"])]
    for _ in range(5):
        f.on_event(("p", "b", "outputs"), "k", [t("y", 1)], now=0.0)
    assert f._states[("p", "step:a", "k")].fires == 3  # first visit + 2 revisits


def test_external_inputs_and_triggers_from_other_pipelines():
    f = Dataflow()
    f.set_plan(build_plan("b", 1, PipelineSpec.parse({
        "input": {"externalInputs": ["a.step.m.outputs.OUT"],
                  "externalTriggers": ["a.outputs"], "tensorMap": {"m.outputs.OUT": "x"}},
        "steps": [{"name": "n"}]})))
    assert f.sources() >= {("a", "m", "outputs"), ("a", None, "outputs")}
    assert f.on_event(("a", "m", "outputs"), "k", [t("OUT", 1), t("OTHER", 2)], 0.0) == []
    fired = f.on_event(("a", None, "outputs"), "k", [t("FINAL", 3)], 0.0)
    # b's input: only the referenced tensor, renamed; the trigger's data is not passed on
    assert names(fired) == [("input", "", ["x"])]
    # b's own inputs topic then feeds its first step
    assert names(f.on_event(("b", None, "inputs"), "k", fired[0].tensors, 0.0)) == [
        ("step", "n", ["x"])]


def test_a_record_waiting_in_a_join_is_held_until_the_join_fires_or_its_window_ends():
    """What keeps its offset uncommitted while its data lives only in the engine's memory."""
    held, freed = [], []
    f = Dataflow(on_hold=held.append, on_free=freed.append)
    f.set_plan(build_plan("p", 1, PipelineSpec.parse(
        {"steps": [{"name": "a"}, {"name": "b"},
                   {"name": "c", "inputs": ["a", "b"], "joinWindowMs": 100}]})))
    assert f.on_event(("p", "a", "outputs"), "k", [t("A", 1)], 0.0, tag="ra") == []
    assert held == ["ra"] and not freed
    fired = f.on_event(("p", "b", "outputs"), "k", [t("B", 2)], 0.01, tag="rb")
    assert names(fired) == [("step", "c", ["A", "B"])] and fired[0].held == ["ra"]
    assert held == ["ra"] and not freed  # "rb" fired at once: never held
    f.on_event(("p", "a", "outputs"), "k2", [t("A", 1)], 0.0, tag="lonely")
    assert names(f.expire(1.0)) == [] and freed == ["lonely"]  # inner join dropped
