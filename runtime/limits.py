"""What the data plane takes on: the body size Envoy (and the pipeline gateway) accept, and
how many requests each set of server replicas may have in flight or queued in one Envoy before
Envoy sheds load with a fast 503. One model shared by the local config and the stack config.

The overload limits are Envoy circuit breakers, which count per cluster; every model on the
same replicas shares one cluster (what keeps Envoy small at thousands of models), so the
limits bound what a server's replicas are asked for at once, across its models."""

from pydantic import BaseModel, ConfigDict, Field

MIB = 2**20


class InferenceLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # larger bodies get 413 with the OIP error body (REST; gRPC messages are capped by the
    # servers' own gRPC limits)
    maxRequestBytes: int = Field(default=16 * MIB, ge=1024)
    # per set of server replicas, per Envoy: requests being served at once (= upstream
    # connections)
    serverMaxRequests: int = Field(default=128, ge=1)
    # per set of server replicas, per Envoy: requests waiting for a connection; beyond, 503
    serverMaxPendingRequests: int = Field(default=128, ge=0)

    def scheduler_args(self) -> list[str]:
        return ["--server-max-requests", str(self.serverMaxRequests),
                "--server-max-pending-requests", str(self.serverMaxPendingRequests)]


DEFAULT_LIMITS = InferenceLimits()
