"""What one request may ask of the data plane: the body size Envoy (and the pipeline gateway)
accept, and how many requests each model version may have in flight or queued in Envoy before
Envoy sheds load with a fast 503. One model shared by the local config and the stack config."""

from pydantic import BaseModel, ConfigDict, Field

MIB = 2**20


class InferenceLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # larger bodies get 413 with the OIP error body (REST; gRPC messages are capped by the
    # servers' own gRPC limits)
    maxRequestBytes: int = Field(default=16 * MIB, ge=1024)
    # per model version, per Envoy: requests being served at once (= upstream connections)
    modelMaxRequests: int = Field(default=128, ge=1)
    # per model version, per Envoy: requests waiting for a connection; beyond them, 503
    modelMaxPendingRequests: int = Field(default=128, ge=0)

    def scheduler_args(self) -> list[str]:
        return ["--model-max-requests", str(self.modelMaxRequests),
                "--model-max-pending-requests", str(self.modelMaxPendingRequests)]


DEFAULT_LIMITS = InferenceLimits()
