"""Experiment spec (mlops.seldon.io/v1alpha1 Experiment)."""

from typing import Literal

from pydantic import Field, model_validator

from runtime.specs.common import Spec


class Candidate(Spec):
    name: str = Field(min_length=1)
    weight: int = Field(gt=0)


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
