"""Model spec (mlops.seldon.io/v1alpha1 Model)."""

from typing import Any

from pydantic import Field, model_validator

from runtime.specs.common import Spec, parse_quantity, quantity, refusing

# Seldon Model fields core2 does not act on, and why (README "Seldon fields and what core2
# does with each"): refused unless left at their default.
UNSUPPORTED = {
    "schemaUri": "model schemas are not fetched by core2; declare the model's inputs and "
                 "outputs in the artifact's model-settings.json (MLServer serves them as the "
                 "model's metadata)",
    "preloaded": "preloading is not supported by core2; a model loads on `replicas` server "
                 "replicas when it is applied",
    "dedicated": "dedicated servers are not supported by core2; give the model a Server of "
                 "its own and pin it there with spec.server",
    "explainer": "explainers are not supported by core2; deploy the explainer as its own "
                 "Model (requirements: [alibi-explain])",
    "logger": "request logging is not supported by core2; a pipeline keeps every step's "
              "inputs and outputs on its Kafka topics (core2 pipeline inspect)",
    "llm": "Seldon's LLM module is not part of core2; serve the model with an MLServer "
           "runtime (e.g. requirements: [huggingface])",
    "dataflow": "cleanTopicsOnDelete is not supported by core2: a model's topics are kept "
                "when it is deleted",
    "secretName": "per-model storage secrets are not supported by core2; give the Server's "
                  "agents the credentials (components.Server env, envFrom or storage secret; "
                  "docs/pulumi.md)",
}


class Parameter(Spec):
    name: str
    value: str


class ModelSpec(Spec):
    storageUri: str = Field(min_length=1)
    artifactVersion: int | None = None
    schemaUri: str | None = None
    requirements: list[str] = []
    memory: str | int | None = None
    replicas: int | None = Field(default=None, ge=0)
    minReplicas: int | None = Field(default=None, ge=0)
    maxReplicas: int | None = Field(default=None, ge=0)
    server: str | None = None
    preloaded: bool | None = None
    dedicated: bool | None = None
    parameters: list[Parameter] = []
    explainer: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    dataflow: dict[str, Any] | None = None
    secretName: str | None = None

    _unsupported = refusing(UNSUPPORTED)
    _memory = quantity("memory")

    @model_validator(mode="after")
    def _replica_bounds(self):
        lo, hi = self.minReplicas, self.maxReplicas
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"minReplicas ({lo}) is greater than maxReplicas ({hi})")
        if hi is not None and self.replicas is not None and self.replicas > hi:
            raise ValueError(f"replicas ({self.replicas}) is greater than maxReplicas ({hi})")
        if lo is not None and self.replicas is not None and self.replicas < lo:
            raise ValueError(f"replicas ({self.replicas}) is less than minReplicas ({lo})")
        return self

    @property
    def memory_bytes(self) -> int:
        return parse_quantity(self.memory) if self.memory is not None else 0

    @property
    def desired_replicas(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return self.scale_floor

    @property
    def autoscaled(self) -> bool:
        """minReplicas..maxReplicas leave the model autoscaler room to scale (Seldon's native
        model autoscaling); `replicas`, when set, is where it starts."""
        return self.maxReplicas is not None and self.maxReplicas > self.scale_floor

    @property
    def scale_floor(self) -> int:
        """The fewest replicas the autoscaler keeps: minReplicas, at least one (no scale to
        zero)."""
        return max(1, self.minReplicas or 0)

    def version_key(self) -> dict:
        """The fields whose change makes a new model version (all but scaling)."""
        return self.model_dump(
            exclude={"replicas", "minReplicas", "maxReplicas"}, exclude_none=True
        )
