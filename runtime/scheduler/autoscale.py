"""Model autoscaling: a Model with minReplicas..maxReplicas gets replicas added under load and
taken away when idle, from the load its agents report (ReportLoad).

The signal is a model's requests in flight, summed over its replicas: each agent reads the
model server's own counters every few seconds, and the rate of a model's summed inference
seconds is, by Little's law, its mean number of requests in flight (no per-request work in
Python). Hysteresis: a replica is added when the mean per replica is above `scaleUpInFlight`;
one is removed only when the load, spread over one replica fewer, would still be below
`scaleDownInFlight` (lower), and has been for `scaleDownDelaySeconds`. One replica per step, and
a cool-down after each change, so it never flaps. A removed copy is unrouted before it unloads
(make before break: ModelManager._unload)."""

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.pb.agent_pb2 import LoadReport, ModelLoad
from runtime.scheduler import state as st
from runtime.scheduler.autoscale_servers import ServerAutoscaler
from runtime.scheduler.events import Hub
from runtime.scheduler.state import Model, ModelVersion

if TYPE_CHECKING:
    from runtime.scheduler.models import ModelManager
    from runtime.scheduler.tables import ServerSpecs

log = logging.getLogger(__name__)

REPLICAS = Gauge("core2_model_autoscale_replicas",
                 "Replicas the model autoscaler wants for a model", ["model"])
IN_FLIGHT = Gauge("core2_model_in_flight",
                  "A model's mean requests in flight over all its replicas (agents' reports)",
                  ["model"])
SCALINGS = Counter("core2_model_autoscale_total", "Model replicas added or removed",
                   ["model", "direction", "reason"])
UP, DOWN = "up", "down"


class AutoscaleConfig(BaseModel):
    """The scheduler's --autoscale-json; local config key `autoscaling` (with the agents'
    loadReportSeconds: runtime.local.config.LocalAutoscaling)."""

    model_config = ConfigDict(extra="forbid")
    models: bool = True                     # scale Models that have minReplicas..maxReplicas
    servers: bool = False                   # scale Servers that have minReplicas..maxReplicas
    scaleUpInFlight: float = Field(default=0.7, gt=0)
    scaleDownInFlight: float = Field(default=0.2, ge=0)
    scaleUpCooldownSeconds: float = Field(default=10.0, ge=0)
    scaleDownDelaySeconds: float = Field(default=60.0, ge=0)
    serverCooldownSeconds: float = Field(default=30.0, ge=0)
    # a replica's report older than this is not counted (its agent is gone or stuck)
    reportStaleSeconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _hysteresis(self):
        if self.scaleDownInFlight >= self.scaleUpInFlight:
            raise ValueError(f"scaleDownInFlight ({self.scaleDownInFlight}) must be below "
                             f"scaleUpInFlight ({self.scaleUpInFlight}), or it would flap")
        return self


@dataclass
class Decision:
    replicas: int
    direction: str
    reason: str


@dataclass
class ModelScaler:
    """One model's scaling memory: when it last changed and since when it has been idle."""

    changed_at: float = float("-inf")
    low_since: float | None = None

    def decide(self, current: int, floor: int, ceiling: int, in_flight: float, now: float,
               cfg: AutoscaleConfig) -> Decision | None:
        """The next replica count, or None to stay; `in_flight` is summed over the replicas.
        The caller calls `changed(now)` when it acts on the decision."""
        if current < floor:
            return Decision(floor, UP, f"minReplicas is {floor}")
        if current > ceiling:
            return Decision(ceiling, DOWN, f"maxReplicas is {ceiling}")
        if in_flight / current > cfg.scaleUpInFlight:
            self.low_since = None
            if current < ceiling and now - self.changed_at >= cfg.scaleUpCooldownSeconds:
                return Decision(current + 1, UP, f"{in_flight:.2f} requests in flight on "
                                f"{current} replica(s), above {cfg.scaleUpInFlight:g} each")
            return None
        if current > floor and in_flight / (current - 1) < cfg.scaleDownInFlight:
            self.low_since = now if self.low_since is None else self.low_since
            quiet = now - max(self.low_since, self.changed_at)
            if quiet >= cfg.scaleDownDelaySeconds:
                return Decision(current - 1, DOWN, f"{in_flight:.2f} requests in flight, "
                                f"below {cfg.scaleDownInFlight:g} each on {current - 1} "
                                f"replica(s) for {quiet:.0f}s")
            return None
        self.low_since = None
        return None

    def changed(self, now: float) -> None:
        self.changed_at = now  # (the quiet time counts from here too: see decide)


@dataclass
class Report:
    in_flight: float
    rps: float
    at: float


@dataclass
class LoadBook:
    """The latest report per (internal model name, replica key)."""

    reports: dict[str, dict[str, Report]] = field(default_factory=dict)

    def note(self, internal: str, replica: str, in_flight: float, rps: float, at: float) -> None:
        self.reports.setdefault(internal, {})[replica] = Report(in_flight, rps, at)

    def total(self, internal: str, replicas: set[str], now: float, stale: float
              ) -> tuple[float, float, int]:
        """(in flight, requests/s, replicas reporting) over `replicas`' fresh reports."""
        fresh = [r for key, r in self.reports.get(internal, {}).items()
                 if key in replicas and now - r.at <= stale]
        return sum(r.in_flight for r in fresh), sum(r.rps for r in fresh), len(fresh)

    def forget(self, live: set[str]) -> None:
        for internal in set(self.reports) - live:
            del self.reports[internal]


class ModelAutoscaler:
    """Called on every load report and once a second (Autoscaler.tick)."""

    def __init__(self, manager: "ModelManager", cfg: AutoscaleConfig):
        self.mm, self.cfg = manager, cfg
        self.book = LoadBook()
        self.scalers: dict[str, ModelScaler] = {}
        self.load: dict[str, tuple[float, float]] = {}  # model -> (in flight, requests/s)

    def report(self, server: str, idx: int, loads: Iterable[ModelLoad], now: float) -> None:
        for load in loads:
            figures = (load.in_flight, load.requests_per_second)
            if all(math.isfinite(x) and x >= 0 for x in figures):  # else: not a reading
                self.book.note(load.model.internal_name, f"{server}/{idx}", *figures, now)

    def tick(self, now: float) -> list[str]:
        """Scale what needs it; returns the names of the models changed."""
        changed: list[str] = []
        seen: set[str] = set()
        live: set[str] = set()
        for m in list(self.mm.models.values()):
            if m.deleted or not m.versions or not m.latest.spec.autoscaled:
                continue
            seen.add(m.name)
            live.add(m.latest.internal_name)
            if self._tick_model(m, m.latest, now):
                changed.append(m.name)
        for name in set(self.load) - seen:  # deleted, or no longer autoscaled
            self._forget(name)
        self.book.forget(live)
        return changed

    def _tick_model(self, m: Model, v: ModelVersion, now: float) -> bool:
        serving = {f"{v.server}/{i}" for i in v.available_replicas()}
        in_flight, rps, reporting = self.book.total(v.internal_name, serving, now,
                                                    self.cfg.reportStaleSeconds)
        self.load[m.name] = (in_flight, rps)
        IN_FLIGHT.labels(m.name).set(in_flight)
        current = self.mm.want(v)
        REPLICAS.labels(m.name).set(current)
        if v.state != st.AVAILABLE or reporting < len(serving):
            return False  # mid-rollout, or not every serving replica has reported yet
        placed = [i for i, r in v.replicas.items() if r.state not in st.LEAVING]
        if len(placed) > len(v.available_replicas()):
            return False  # the last step is still loading
        spec = v.spec
        scaler = self.scalers.setdefault(m.name, ModelScaler())
        decision = scaler.decide(current, spec.scale_floor, spec.maxReplicas or current,
                                 in_flight, now, self.cfg)
        if decision is None or (decision.direction == UP and len(placed) < current):
            return False  # (placed on fewer than wanted: waiting for the server to grow)
        scaler.changed(now)
        log.info("model scaled", extra={"model": m.name, "replicas": decision.replicas,
                                        "was": current, "reason": decision.reason})
        v.scaled, v.scale_reason = decision.replicas, f"{decision.direction}: {decision.reason}"
        SCALINGS.labels(m.name, decision.direction, _reason_kind(decision.reason)).inc()
        REPLICAS.labels(m.name).set(decision.replicas)
        self.mm._schedule(m, v)
        return True

    def _forget(self, name: str) -> None:
        self.scalers.pop(name, None)
        self.load.pop(name, None)
        for gauge in (REPLICAS, IN_FLIGHT):
            try:
                gauge.remove(name)
            except KeyError:
                pass

    def detail(self, m: Model) -> dict | None:
        """The model's autoscaling as its status shows it."""
        v = m.latest
        if not self.cfg.models or m.deleted or not v.spec.autoscaled:
            return None
        in_flight, rps = self.load.get(m.name, (0.0, 0.0))
        return {"replicas": self.mm.want(v), "minReplicas": v.spec.scale_floor,
                "maxReplicas": v.spec.maxReplicas, "inFlight": round(in_flight, 3),
                "requestsPerSecond": round(rps, 2), "reason": v.scale_reason}


def _reason_kind(reason: str) -> str:
    """A short, bounded label for the metric (the full reason is in status)."""
    if reason.startswith(("minReplicas", "maxReplicas")):
        return reason.split()[0]
    return "load" if "above" in reason else "idle"


class Autoscaler:
    """Model and server autoscaling in the scheduler: load reports in, a look once a second."""

    def __init__(self, hub: Hub, models: "ModelManager", servers: "ServerSpecs",
                 cfg: AutoscaleConfig, interval: float = 1.0):
        self.hub, self.mm, self.cfg, self.interval = hub, models, cfg, interval
        self.models = ModelAutoscaler(models, cfg)
        self.servers = ServerAutoscaler(hub, models, servers, cfg)

    def report(self, report: LoadReport) -> None:
        self.models.report(report.server_name, report.replica_idx, report.models,
                           time.monotonic())

    def start(self) -> None:
        self.hub.spawn(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick(time.monotonic())
            except Exception:  # a bug here must not stop the scheduler or later looks
                log.exception("autoscaler tick failed")

    def tick(self, now: float) -> None:
        changed = self.models.tick(now) if self.cfg.models else []
        for name in changed:
            self.mm.changed(name)
        if self.cfg.servers:
            self.servers.tick(now)
        if changed:
            self.hub.spawn(self.hub.publish_routes())
