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


# An adaptive experiment's weights are percentages: they add up to this.
STRATEGY_TOTAL = 100


class Strategy(Spec):
    """Adaptive traffic split: the scheduler recomputes the candidates' weights from the
    rewards sent to the feedback endpoint (runtime.scheduler.bandit has the math)."""

    type: Literal["epsilonGreedy", "thompson", "ucb1"]
    epsilon: float = Field(default=0.1, ge=0, le=1,
                           description="epsilonGreedy: share of traffic spread evenly")
    exploration: float = Field(default=2.0, gt=0, le=100,
                               description="ucb1: c in mean + sqrt(c ln N / n)")
    seed: int | None = Field(default=None, description="thompson: fixed random seed")
    updateIntervalMs: int = Field(default=1000, ge=100, le=3_600_000,
                                  description="weights change at most this often")
    minWeight: int = Field(default=5, ge=0, le=50,
                           description="percent of traffic every candidate keeps")
    labelRewards: dict[str, float] = Field(
        default_factory=lambda: {"good": 1.0, "bad": 0.0},
        description="the reward of each feedback label (rewards are 0..1)")

    @model_validator(mode="after")
    def _check(self):
        for label, reward in self.labelRewards.items():
            if not 0 <= reward <= 1:
                raise ValueError(f"labelRewards.{label}: {reward} is not between 0 and 1")
        return self


class ExperimentSpec(Spec):
    default: str | None = None
    candidates: list[Candidate] = []
    mirror: Mirror | None = None
    resourceType: Literal["model", "pipeline"] = "model"
    strategy: Strategy | None = None

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
        if self.strategy is not None:
            if len(names) < 2:
                raise ValueError("strategy: needs at least two candidates to choose between")
            if self.strategy.minWeight * len(names) > STRATEGY_TOTAL:
                raise ValueError(f"strategy.minWeight: {self.strategy.minWeight}% for each of "
                                 f"{len(names)} candidates exceeds {STRATEGY_TOTAL}%")
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
