"""Step references of a Pipeline spec, parsed once into `Ref`s.

Inside a pipeline: `step`, `step.outputs`, `step.outputs.T`, `step.inputs[.T]`,
`pipeline.inputs[.T]` (or `<own name>.inputs[.T]`). In `input.externalInputs`/`externalTriggers`:
`other.outputs[.T]`, `other.inputs[.T]`, `other.step.s.outputs|inputs[.T]`."""

from dataclasses import dataclass

DIRECTIONS = ("inputs", "outputs")


@dataclass(frozen=True)
class Ref:
    pipeline: str          # the pipeline whose topic carries the data
    step: str | None       # None: the pipeline's own inputs/outputs
    direction: str         # "inputs" | "outputs"
    tensor: str | None     # one tensor, or None for all of them

    @property
    def source(self) -> tuple[str, str | None, str]:
        return (self.pipeline, self.step, self.direction)

    def labels(self, tensor: str) -> list[str]:
        """Names a tensorMap may use for `tensor` arriving through this ref."""
        owner = self.step if self.step is not None else self.pipeline
        names = [f"{owner}.{self.direction}.{tensor}"]
        if self.step is None:
            names.append(f"pipeline.{self.direction}.{tensor}")
        return names


class RefError(ValueError):
    pass


def parse_step_ref(text: str, pipeline: str, steps: set[str]) -> Ref:
    """A reference used by a step or by the pipeline's output."""
    parts = text.split(".")
    head = parts[0]
    if head in steps:
        direction = parts[1] if len(parts) > 1 else "outputs"
        if direction not in DIRECTIONS:
            raise RefError(f"{text!r}: expected {head}.inputs or {head}.outputs")
        return Ref(pipeline, head, direction, ".".join(parts[2:]) or None)
    if head in ("pipeline", pipeline) and len(parts) >= 2 and parts[1] == "inputs":
        return Ref(pipeline, None, "inputs", ".".join(parts[2:]) or None)
    raise RefError(f"{text!r} is not a step of this pipeline (steps: {', '.join(sorted(steps))})")


def parse_external_ref(text: str) -> Ref:
    """A reference to another pipeline, used by input.externalInputs/externalTriggers."""
    parts = text.split(".")
    if len(parts) >= 2 and parts[1] in DIRECTIONS:
        return Ref(parts[0], None, parts[1], ".".join(parts[2:]) or None)
    if len(parts) >= 4 and parts[1] == "step" and parts[3] in DIRECTIONS:
        return Ref(parts[0], parts[2], parts[3], ".".join(parts[4:]) or None)
    raise RefError(f"{text!r}: expected <pipeline>.outputs[.tensor], <pipeline>.inputs[.tensor] "
                   "or <pipeline>.step.<step>.outputs|inputs[.tensor]")
