"""Pipeline spec (mlops.seldon.io/v1alpha1 Pipeline)."""

from typing import Literal

from pydantic import Field, model_validator

from runtime.specs.common import Spec, SpecError, refusing

JoinType = Literal["inner", "outer", "any"]
# Seldon Pipeline fields core2 does not act on, and why: refused unless left at their default.
UNSUPPORTED = {
    "dataflow": "cleanTopicsOnDelete is not supported by core2: a pipeline's topics are kept "
                "when it is deleted",
    "rolling": "rolling batches are not supported by core2; a batch is sent when `size` "
               "records wait or `windowMs` has passed",
}


class Batch(Spec):
    size: int | None = Field(default=None, gt=0)
    windowMs: int | None = Field(default=None, gt=0)
    rolling: bool | None = None

    _unsupported = refusing(UNSUPPORTED, "rolling")


class Step(Spec):
    name: str = Field(min_length=1)
    inputs: list[str] = []
    joinWindowMs: int | None = Field(default=None, ge=0)
    tensorMap: dict[str, str] = {}
    triggers: list[str] = []
    inputsJoinType: JoinType = "inner"
    triggersJoinType: JoinType = "inner"
    batch: Batch | None = None


class PipelineInput(Spec):
    externalInputs: list[str] = []
    externalTriggers: list[str] = []
    joinWindowMs: int | None = Field(default=None, ge=0)
    joinType: JoinType = "inner"
    triggersJoinType: JoinType = "inner"
    tensorMap: dict[str, str] = {}


class PipelineOutput(Spec):
    steps: list[str] = []
    joinWindowMs: int | None = Field(default=None, ge=0)
    stepsJoin: JoinType = "inner"
    tensorMap: dict[str, str] = {}


class PipelineSpec(Spec):
    input: PipelineInput | None = None
    steps: list[Step] = Field(min_length=1)
    output: PipelineOutput | None = None
    allowCycles: bool = False
    maxStepRevisits: int | None = Field(default=None, ge=0)
    dataflow: dict | None = None

    _unsupported = refusing(UNSUPPORTED, "dataflow")

    @model_validator(mode="after")
    def _check_graph(self) -> "PipelineSpec":
        problems = _graph_problems(self, pipeline=None)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def validate_for(self, name: str) -> "PipelineSpec":
        """Checks that need the pipeline's name: no step named like it, and `X.inputs` refs
        name this pipeline. Raises SpecError."""
        problems = _graph_problems(self, pipeline=name)
        problems += _own_external_refs(self, name)
        if name in {s.name for s in self.steps}:
            problems.insert(0, f"steps: a step is named like the pipeline ({name!r})")
        if problems:
            raise SpecError(f"Pipeline {name}: spec: " + "; ".join(problems))
        return self


def _graph_problems(spec: PipelineSpec, pipeline: str | None) -> list[str]:
    from runtime.dataflow.refs import RefError, parse_external_ref, parse_step_ref

    steps = [s.name for s in spec.steps]
    names = set(steps)
    problems = [f"steps: step {n!r} is defined more than once"
                for n in sorted(names) if steps.count(n) > 1]

    def step_of(text: str, where: str) -> str | None:
        head = text.split(".")[0]
        own = pipeline or (head if head not in names else "")
        try:
            return parse_step_ref(text, own, names).step
        except RefError as e:
            problems.append(f"{where}: {e}")
            return None

    edges: dict[str, set[str]] = {n: set() for n in names}
    for i, s in enumerate(spec.steps):
        for field, refs in (("inputs", s.inputs), ("triggers", s.triggers)):
            for r in refs:
                src = step_of(r, f"steps[{i}].{field}")
                if src:
                    edges[s.name].add(src)
        both = sorted(set(s.inputs) & set(s.triggers))
        if both:
            problems.append(f"steps[{i}].triggers: {', '.join(map(repr, both))} "
                            "is also an input of the step")
    for r in spec.output.steps if spec.output else []:
        step_of(r, "output.steps")
    for field in ("externalInputs", "externalTriggers"):
        for r in getattr(spec.input, field) if spec.input else []:
            try:
                parse_external_ref(r)
            except RefError as e:
                problems.append(f"input.{field}: {e}")
    cycle = _find_cycle(edges)
    if cycle and not spec.allowCycles:
        problems.append(f"steps: cycle {' -> '.join(cycle)}; set allowCycles "
                        "(and maxStepRevisits) to allow it")
    return problems


def _own_external_refs(spec: PipelineSpec, name: str) -> list[str]:
    """externalInputs/externalTriggers naming this pipeline: it would feed on itself."""
    from runtime.dataflow.refs import RefError, parse_external_ref

    problems = []
    for field in ("externalInputs", "externalTriggers"):
        for i, r in enumerate(getattr(spec.input, field) if spec.input else []):
            try:
                ref = parse_external_ref(r)
            except RefError:
                continue  # reported by _graph_problems
            if ref.pipeline == name:
                problems.append(f"input.{field}[{i}]: {r!r} is this pipeline's own "
                                f"{ref.direction}; a pipeline may not take its own data as "
                                "external input (use steps, or allowCycles)")
    return problems


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in step -> the steps it reads from, as a path, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*path[path.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None
