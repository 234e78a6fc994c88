"""Server autoscaling: a Server with minReplicas..maxReplicas grows when one of its models wants
more replicas than the server has, and shrinks when its models fit on one replica fewer.

The scheduler only decides: the server's wanted replica count is in its status
(`detail.autoscaling.replicas`), and whoever runs the replicas follows it (the local supervisor
starts and stops processes). Before the count goes down, the leaving replica (the highest
index, as a StatefulSet removes it) is drained: its models move to the other replicas and are
Available there before it is unrouted (drain.Drainer, as for a preStop). A drain that cannot
move everything is undone and the server keeps its replicas."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from runtime.scheduler import state as st
from runtime.scheduler.events import Hub, ServerChanged
from runtime.specs.server import ServerSpec

if TYPE_CHECKING:
    from runtime.scheduler.autoscale import AutoscaleConfig
    from runtime.scheduler.models import ModelManager
    from runtime.scheduler.tables import ServerSpecs

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 120.0
SERVER_REPLICAS = Gauge("core2_server_autoscale_replicas",
                        "Replicas the server autoscaler wants for a server", ["server"])


class ServerAutoscaler:
    def __init__(self, hub: Hub, models: ModelManager, servers: ServerSpecs,
                 cfg: AutoscaleConfig):
        self.hub, self.mm, self.servers, self.cfg = hub, models, servers, cfg
        self.targets: dict[str, int] = {}
        self.reasons: dict[str, str] = {}
        self.changed_at: dict[str, float] = {}
        self.scaling_in: set[str] = set()  # servers with a drain under way

    def bounds(self, server: str) -> tuple[int, int, int] | None:
        """(minReplicas, maxReplicas, replicas to start from) of an autoscaled Server."""
        doc = self.servers.docs.get(server)
        if doc is None:
            return None
        spec = ServerSpec.model_validate(doc["spec"])
        if spec.maxReplicas is None:
            return None
        lo = max(1, spec.minReplicas or 0)
        return lo, spec.maxReplicas, min(max(spec.replicas, lo), spec.maxReplicas)

    def tick(self, now: float) -> list[str]:
        changed = []
        for server in sorted(self.servers.docs):
            bounds = self.bounds(server)
            if bounds is None:
                self.targets.pop(server, None)
                continue
            if server not in self.scaling_in and self._tick_server(server, *bounds, now):
                changed.append(server)
        return changed

    def _tick_server(self, server: str, lo: int, hi: int, start: int, now: float) -> bool:
        reps = [r for r in self.mm.replicas.values() if r.server == server]
        if server not in self.targets:  # first sight: it waits a cool-down before scaling
            # from the replicas known (kept over a scheduler restart), or the spec's count
            self.targets[server] = min(max(len(reps), lo), hi) if reps else start
            self.changed_at[server] = now
            self.hub.bus.publish(ServerChanged(server))  # its status now says what it wants
        target = self.targets[server]
        SERVER_REPLICAS.labels(server).set(target)
        if target < lo:
            return self._set(server, lo, f"minReplicas is {lo}", now)
        active = [r for r in reps if r.connected and not r.draining]
        if len(active) != target:
            return False  # replicas still starting or stopping
        if now - self.changed_at.get(server, float("-inf")) < self.cfg.serverCooldownSeconds:
            return False
        need, model = self._most_wanted(server)
        if target > hi:  # maxReplicas lowered: one replica at a time, each drained first
            self._start_scale_in(server, active, f"maxReplicas is {hi}")
        elif need > target and target < hi:
            return self._set(server, target + 1, f"model {model} wants {need} replicas", now)
        elif target > lo and need < target and self._fits_on(server, active, target - 1):
            self._start_scale_in(server, active, f"its models fit on fewer replicas (most "
                                 f"wanted: {need})")
        return False

    def _start_scale_in(self, server: str, active: list[st.Replica], why: str) -> None:
        leaving = max(active, key=lambda r: r.idx)  # as a StatefulSet removes the last
        self.scaling_in.add(server)
        self.hub.spawn(self._scale_in(server, leaving, why))

    def _most_wanted(self, server: str) -> tuple[int, str]:
        """The most replicas any model on (or pinned to) the server wants, and which."""
        best = (0, "")
        for m in self.mm.models.values():
            if m.deleted or not m.versions:
                continue
            v = m.latest
            if v.state in (st.TERMINATING, st.TERMINATED):
                continue
            if v.server == server or v.spec.server == server:
                best = max(best, (self.mm.want(v), m.name))
        return best

    def _fits_on(self, server: str, active: list[st.Replica], n: int) -> bool:
        """The memory placed on the server fits on its first `n` replicas."""
        used = self.mm.used_memory.without(None)
        placed = sum(used.get(r.key, 0) for r in active)
        keep = sorted(active, key=lambda r: r.idx)[:n]
        return placed <= sum(r.capacity for r in keep)

    async def _scale_in(self, server: str, leaving: st.Replica, why: str) -> None:
        try:
            outcomes = await self.mm.drainer.drain(server, leaving.idx, DRAIN_TIMEOUT_S)
            stuck = [o for o in outcomes if not o.moved]
            if stuck:
                leaving.draining = False  # keeps serving what could not move
                self.reasons[server] = (f"scale-in stopped: {stuck[0].model} could not leave "
                                        f"{leaving.key}: {stuck[0].reason}")
                self.changed_at[server] = time.monotonic()
                log.info("server %s: %s", server, self.reasons[server])
                self.hub.bus.publish(ServerChanged(server))
                return
            self.mm.released.add(leaving.key)
            self._set(server, self.targets[server] - 1, f"{why}; {leaving.key} drained",
                      time.monotonic())
        finally:
            self.scaling_in.discard(server)

    def _set(self, server: str, target: int, reason: str, now: float) -> bool:
        log.info("server scaled", extra={"server": server, "replicas": target,
                                         "was": self.targets[server], "reason": reason})
        self.targets[server], self.reasons[server] = target, reason
        self.changed_at[server] = now
        SERVER_REPLICAS.labels(server).set(target)
        self.hub.bus.publish(ServerChanged(server))
        return True

    def detail(self, server: str) -> dict | None:
        if server not in self.targets:
            return None
        lo, hi, _ = self.bounds(server) or (0, 0, 0)
        return {"replicas": self.targets[server], "minReplicas": lo, "maxReplicas": hi,
                "reason": self.reasons.get(server, ""),
                "scalingIn": server in self.scaling_in}
