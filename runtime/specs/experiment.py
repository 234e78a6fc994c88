"""Experiment spec (mlops.seldon.io/v1alpha1 Experiment)."""

from typing import Literal

from pydantic import Field, model_validator

from runtime.specs.common import Spec, SpecError

# Envoy multiplies weights into its own integers: bounded, a weight can neither overflow
# them nor round every other candidate down to nothing.
MAX_WEIGHT = 1_000_000


class Candidate(Spec):
    name: str = Field(min_length=1)
    weight: int = Field(ge=1, le=MAX_WEIGHT)


class Mirror(Spec):
    name: str = Field(min_length=1)
    percent: int = Field(default=100, gt=0, le=100)


class ExperimentSpec(Spec):
    default: str | None = None
    candidates: list[Candidate] = []
    mirror: Mirror | None = None
    resourceType: Literal["model", "pipeline"] = "model"

    @model_validator(mode="after")
    def _check(self):
        names = [c.name for c in self.candidates]
        if not names and self.mirror is None:
            raise ValueError("candidates: at least one candidate or a mirror is required")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidates: duplicate name(s) {', '.join(dupes)}")
        if self.default is not None and self.default not in names:
            raise ValueError(f"default: {self.default!r} is not one of the candidates")
        if self.mirror is not None and self.mirror.name in names:
            raise ValueError(f"mirror: {self.mirror.name!r} is also a candidate")
        return self

    def validate_for(self, name: str) -> "ExperimentSpec":
        """Checks that need the experiment's name: it may not route to itself."""
        named = [("default", self.default)]
        named += [(f"candidates[{i}].name", c.name) for i, c in enumerate(self.candidates)]
        named += [("mirror.name", self.mirror.name if self.mirror else None)]
        for field, value in named:
            if value == name:
                raise SpecError(f"Experiment {name}: spec.{field}: an experiment may not name "
                                "itself")
        return self
