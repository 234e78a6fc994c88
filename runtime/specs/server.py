"""Server spec (mlops.seldon.io/v1alpha1 Server), with core2's local-mode fields."""

from typing import Any

from pydantic import Field, field_validator

from runtime.specs.common import Spec, parse_quantity, quantity, refusing

# Seldon Server fields core2 does not act on: a Server's pods are made by the Pulumi component
# (components.Server), not from this spec, which tells the scheduler what the server offers.
UNSUPPORTED = {
    "podSpec": "core2 does not build a Server's pods from its spec; set them on the Pulumi "
               "component (components.Server: nodeSelector, tolerations, gpu, "
               "serverResources, env, volumes; docs/pulumi.md)",
    "scaling": "use replicas, minReplicas and maxReplicas",
    "statefulSetPersistentVolumeClaimRetentionPolicy": "a Server's StatefulSet is made by "
        "the Pulumi component (components.Server, whose cacheSize claims it keeps)",
}


class ServerSpec(Spec):
    serverConfig: str = "mlserver"
    capabilities: list[str] | None = None  # replaces the server type's defaults
    extraCapabilities: list[str] = []
    replicas: int = Field(default=1, ge=0)
    minReplicas: int | None = Field(default=None, ge=0)
    maxReplicas: int | None = Field(default=None, ge=0)
    # core2: model memory a replica offers, and how far placement may over-commit it.
    memory: str | int = "1G"
    overCommitPercentage: int = Field(default=10, ge=0, le=1000)
    podSpec: dict[str, Any] | None = None
    scaling: dict[str, Any] | None = None
    statefulSetPersistentVolumeClaimRetentionPolicy: dict[str, Any] | None = None
    # Seldon: do not roll the pods when the ServerConfig changes. core2 never rolls a
    # server's pods by itself (Pulumi does, on `pulumi up`), so either value is honoured.
    disableAutoUpdate: bool | None = None

    _unsupported = refusing(UNSUPPORTED)
    _memory = quantity("memory")

    @field_validator("serverConfig")
    @classmethod
    def _config(cls, v):
        if v not in DEFAULT_CAPABILITIES:
            known = ", ".join(DEFAULT_CAPABILITIES)
            raise ValueError(f"{v!r} is not a known server type ({known})")
        return v

    @property
    def memory_bytes(self) -> int:
        return parse_quantity(self.memory)

    def all_capabilities(self) -> list[str]:
        base = self.capabilities if self.capabilities is not None else DEFAULT_CAPABILITIES[
            self.serverConfig]
        return sorted(set(base) | set(self.extraCapabilities))


# What each server type can run, as Seldon's default ServerConfigs advertise.
DEFAULT_CAPABILITIES = {
    "mlserver": ["mlserver", "alibi-detect", "alibi-explain", "huggingface", "lightgbm",
                 "mlflow", "python", "sklearn", "spark-mlib", "xgboost"],
    "triton": ["triton", "dali", "fil", "onnx", "openvino", "python", "pytorch",
               "tensorflow", "tensorrt"],
}
