"""A pipeline spec turned into the nodes the engine runs: each step, the pipeline's output and
(for pipeline-to-pipeline chaining) its external input, each with the refs it joins."""

from dataclasses import dataclass, field

from runtime.dataflow.refs import Ref, parse_external_ref, parse_step_ref
from runtime.specs.pipeline import PipelineSpec

DEFAULT_JOIN_WINDOW_MS = 10_000

STEP, OUTPUT, INPUT = "step", "output", "input"


@dataclass(frozen=True)
class Slot:
    ref: Ref
    trigger: bool  # a trigger gates the node; its data is not passed on


@dataclass
class Node:
    pipeline: str
    kind: str                     # STEP | OUTPUT | INPUT
    name: str                     # the step (= model) name; "" for OUTPUT/INPUT
    slots: list[Slot]
    inputs_join: str = "inner"
    triggers_join: str = "inner"
    window_ms: int = DEFAULT_JOIN_WINDOW_MS
    tensor_map: dict[str, str] = field(default_factory=dict)
    max_fires: int = 1            # > 1 only for steps of a pipeline with allowCycles

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def joins(self) -> bool:
        return len(self.slots) > 1 or self.max_fires > 1


@dataclass
class Plan:
    name: str
    version: int
    nodes: list[Node]

    @property
    def models(self) -> set[str]:
        return {n.name for n in self.nodes if n.kind == STEP}

    def sources(self) -> set[tuple[str, str | None, str]]:
        return {s.ref.source for n in self.nodes for s in n.slots}


def build_plan(name: str, version: int, spec: PipelineSpec) -> Plan:
    steps = {s.name for s in spec.steps}
    max_fires = 1 + (spec.maxStepRevisits or 0) if spec.allowCycles else 1
    if spec.allowCycles and spec.maxStepRevisits is None:
        max_fires = 1 + 10  # a cycle must end: Seldon's default revisit bound

    def step_ref(text: str) -> Ref:
        return parse_step_ref(text, name, steps)

    own_inputs = Ref(name, None, "inputs", None)
    nodes: list[Node] = []
    for s in spec.steps:
        slots = [Slot(step_ref(r), False) for r in s.inputs] or [Slot(own_inputs, False)]
        slots += [Slot(step_ref(r), True) for r in s.triggers]
        nodes.append(Node(name, STEP, s.name, slots, s.inputsJoinType, s.triggersJoinType,
                          s.joinWindowMs or DEFAULT_JOIN_WINDOW_MS, dict(s.tensorMap),
                          max_fires))

    out = spec.output
    out_refs = (out.steps if out and out.steps else [spec.steps[-1].name])
    nodes.append(Node(name, OUTPUT, "", [Slot(step_ref(r), False) for r in out_refs],
                      out.stepsJoin if out else "inner", "inner",
                      (out.joinWindowMs if out else None) or DEFAULT_JOIN_WINDOW_MS,
                      dict(out.tensorMap) if out else {}))

    inp = spec.input
    if inp and (inp.externalInputs or inp.externalTriggers):
        slots = [Slot(parse_external_ref(r), False) for r in inp.externalInputs]
        slots += [Slot(parse_external_ref(r), True) for r in inp.externalTriggers]
        nodes.append(Node(name, INPUT, "", slots, inp.joinType, inp.triggersJoinType,
                          inp.joinWindowMs or DEFAULT_JOIN_WINDOW_MS, dict(inp.tensorMap)))
    return Plan(name, version, nodes)
