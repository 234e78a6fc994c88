"""The agent's command line."""

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from runtime.specs.common import describe, parse_quantity
from runtime.specs.fetch import FetchRules


@dataclass(frozen=True)
class AgentConfig:
    scheduler: str
    server_name: str
    replica_idx: int
    capabilities: list[str]
    memory: int
    over_commit: int
    host: str
    server_http_port: int
    server_grpc_port: int
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: Path
    cache_dir: Path
    server_metrics_port: int | None = None  # model server's /metrics; None: no per-model series
    fetch_rules: FetchRules = field(default_factory=FetchRules)
    local_roots_file: Path | None = None     # more fetch.localRoots, one a line, read per fetch
    eviction: str = "reload-cost"            # or "lru" (models.Placements.victim)
    # "mlserver" (core2's name hook inside the server; Envoy reaches it directly) or "triton"
    # (Envoy reaches the agent's proxy, which renames requests to the internal name)
    server_kind: str = "mlserver"
    load_report_seconds: float = 2.0         # how often models' load goes to the scheduler

    @property
    def proxied(self) -> bool:
        """Every request passes the agent's proxy: the server cannot rename by itself."""
        return self.server_kind == "triton"


def _quantity(value: str) -> int:
    try:
        return parse_quantity(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rules(value: str) -> FetchRules:
    try:
        return FetchRules.model_validate_json(value)
    except ValidationError as e:
        raise argparse.ArgumentTypeError(describe(e, "fetch")) from None


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    p = argparse.ArgumentParser(prog="python -m runtime.agent",
                                description="core2 agent for one model-server replica")
    p.add_argument("--scheduler", required=True, help="scheduler agent API, host:port")
    p.add_argument("--server-name", required=True)
    p.add_argument("--replica-idx", type=int, default=0)
    p.add_argument("--capabilities", default="", help="comma-separated, e.g. sklearn,mlserver")
    p.add_argument("--memory", type=_quantity, required=True, help="replica memory, e.g. 1G")
    p.add_argument("--over-commit", type=int, default=10, help="percentage")
    p.add_argument("--host", default="127.0.0.1", help="address Envoy uses for this replica")
    p.add_argument("--server-http-port", type=int, required=True)
    p.add_argument("--server-grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True, help="reload-and-forward REST port")
    p.add_argument("--grpc-port", type=int, required=True, help="reload-and-forward gRPC port")
    p.add_argument("--metrics-port", type=int, required=True, help="agent /metrics and /ready")
    p.add_argument("--repository", type=Path, required=True, help="model server repository")
    p.add_argument("--cache-dir", type=Path, required=True, help="artifact cache")
    p.add_argument("--server-metrics-port", type=int, default=None,
                   help="the model server's Prometheus port (MLServer or Triton, told apart by "
                        "metric names); its per-model counters become seldon_model_* metrics")
    p.add_argument("--fetch-rules", type=_rules, default=FetchRules(),
                   help="JSON: allowedSchemes, localRoots, allowedNetworks, maxBytes (default: "
                        "any local path, no loopback/link-local/metadata address, 10Gi)")
    p.add_argument("--local-roots-file", type=Path, default=None,
                   help="more local roots, one folder a line, read at every fetch")
    p.add_argument("--eviction", choices=("reload-cost", "lru"),
                   default=os.environ.get("CORE2_AGENT_EVICTION", "reload-cost"),
                   help="what over-commit evicts: the least recently used, with models that "
                        "are dear to reload counted as used later (default), or plain least "
                        "recently used; default from CORE2_AGENT_EVICTION, for benchmarks")
    p.add_argument("--server-kind", choices=("mlserver", "triton"), default="mlserver",
                   help="the model server: its repository layout, and whether requests pass "
                        "the agent's proxy (triton: it renames them to the internal name)")
    p.add_argument("--load-report-seconds", type=float, default=2.0, metavar="S",
                   help="report each model's requests in flight to the scheduler (model "
                        "autoscaling) every S seconds, read from the model server's metrics; "
                        "0 turns it off (default 2)")
    a = p.parse_args(argv)
    if a.load_report_seconds < 0:
        p.error(f"--load-report-seconds: {a.load_report_seconds} is negative")
    caps = [c.strip() for c in a.capabilities.split(",") if c.strip()]
    return AgentConfig(
        scheduler=a.scheduler, server_name=a.server_name, replica_idx=a.replica_idx,
        capabilities=caps, memory=a.memory, over_commit=a.over_commit, host=a.host,
        server_http_port=a.server_http_port, server_grpc_port=a.server_grpc_port,
        http_port=a.http_port, grpc_port=a.grpc_port, metrics_port=a.metrics_port,
        repository=a.repository.resolve(), cache_dir=a.cache_dir.resolve(),
        server_metrics_port=a.server_metrics_port, fetch_rules=a.fetch_rules,
        local_roots_file=a.local_roots_file, eviction=a.eviction, server_kind=a.server_kind,
        load_report_seconds=a.load_report_seconds,
    )
