"""Pipeline spec (mlops.seldon.io/v1alpha1 Pipeline)."""

from typing import Literal

from pydantic import Field

from runtime.specs.common import Spec

JoinType = Literal["inner", "outer", "any"]


class Batch(Spec):
    size: int | None = Field(default=None, gt=0)
    windowMs: int | None = Field(default=None, gt=0)
    rolling: bool | None = None


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
