"""The settings of the agent and of the model server processes it drives: each from its
command line (`python -m runtime.agent --help`), then CORE2_* environment variables, then
the defaults (runtime.settings)."""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from runtime.settings import ServiceSettings, load
from runtime.specs.common import parse_quantity
from runtime.specs.fetch import FetchRules

PROG = "python -m runtime.agent"
AbsolutePath = Annotated[Path, AfterValidator(Path.resolve)]


def _split_commas(value: object) -> object:
    return [c.strip() for c in value.split(",") if c.strip()] if isinstance(value, str) else value


class AgentConfig(ServiceSettings):
    """One model-server replica's agent."""

    scheduler: str = Field(description="scheduler agent API, host:port")
    server_name: str = Field(description="the Server this replica belongs to")
    replica_idx: int = Field(0, ge=0, description="this replica's index in its Server")
    capabilities: Annotated[list[str], NoDecode, BeforeValidator(_split_commas)] = Field(
        [], description="comma-separated, e.g. sklearn,mlserver")
    memory: Annotated[int, BeforeValidator(parse_quantity)] = Field(
        gt=0, description="replica memory, a Kubernetes quantity (1G, 512Mi) or bytes")
    over_commit: int = Field(10, ge=0, description="over-commit percentage")
    host: str = Field("127.0.0.1", description="address Envoy uses for this replica")
    server_http_port: int = Field(description="the model server's REST port")
    server_grpc_port: int = Field(description="the model server's gRPC port")
    http_port: int = Field(description="reload-and-forward REST port")
    grpc_port: int = Field(description="reload-and-forward gRPC port")
    metrics_port: int = Field(description="agent /metrics, /ready and /live")
    repository: AbsolutePath = Field(description="model server repository")
    cache_dir: AbsolutePath = Field(description="artifact cache")
    server_metrics_port: int | None = Field(None, description=(
        "the model server's Prometheus port (MLServer or Triton, told apart by metric "
        "names); its per-model counters become seldon_model_* metrics"))
    fetch_rules: FetchRules = Field(default_factory=FetchRules, description=(
        "JSON: allowedSchemes, localRoots, allowedNetworks, maxBytes (default: any local "
        "path, no loopback/link-local/metadata address, 10Gi)"))
    local_roots_file: Path | None = Field(None, description=(
        "more local roots, one folder a line, read at every fetch"))
    eviction: Literal["reload-cost", "lru"] = Field("reload-cost", description=(
        "what over-commit evicts: the least recently used, with models that are dear to "
        "reload counted as used later (default), or plain least recently used; default from "
        "CORE2_AGENT_EVICTION, for benchmarks"))
    server_kind: Literal["mlserver", "triton"] = Field("mlserver", description=(
        "the model server: its repository layout, and whether requests pass the agent's "
        "proxy (triton: it renames them to the internal name)"))
    load_report_seconds: float = Field(2.0, ge=0, description=(
        "report each model's requests in flight to the scheduler (model autoscaling) every "
        "S seconds, read from the model server's metrics; 0 turns it off"))

    @model_validator(mode="before")
    @classmethod
    def _eviction_from_env(cls, values: Any) -> Any:
        if isinstance(values, dict) and "eviction" not in values and \
                (env := os.environ.get("CORE2_AGENT_EVICTION")):
            values["eviction"] = env  # the variable's name before the settings class
        return values

    @property
    def proxied(self) -> bool:
        """Every request passes the agent's proxy: the server cannot rename by itself."""
        return self.server_kind == "triton"


class ServerSettings(ServiceSettings):
    """What every model server launcher takes (runtime.agent.modelserver, .tritonserver)."""

    repository: AbsolutePath = Field(description="model repository folder")
    http_port: int = Field(description="REST port")
    grpc_port: int = Field(description="gRPC port")
    metrics_port: int = Field(description="Prometheus /metrics port")
    host: str = Field("127.0.0.1", description="address to listen on")


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    """The settings from `argv` (default: the command line), or exit 2 naming the bad flag."""
    return load(AgentConfig, PROG, argv)
