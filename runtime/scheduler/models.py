"""Model lifecycle in the scheduler: versions, placement, agent operations and events."""

import asyncio
import logging
from collections.abc import Iterator

from runtime.pb import agent_pb2
from runtime.scheduler import state as st
from runtime.scheduler.drain import Drainer
from runtime.scheduler.events import Hub, ModelChanged, ServerChanged, Stamps
from runtime.scheduler.placement import PlacementError, UsedMemory, place
from runtime.scheduler.state import Model, ModelVersion, Replica, ReplicaState
from runtime.scheduler.tables import NotFound, ServerSpecs
from runtime.specs import ModelSpec
from runtime.specs.server import ServerSpec

log = logging.getLogger(__name__)
Op = agent_pb2.ModelOperation
Ev = agent_pb2.ModelEvent


class Unsatisfiable(Exception):
    """No server the scheduler knows could ever run the model (gRPC FAILED_PRECONDITION)."""


class ModelManager:
    """Owns models and replicas; publishes ModelChanged for every change to a model (its
    versions, their replicas) and ServerChanged when a replica comes or goes."""

    def __init__(self, hub: Hub, servers: ServerSpecs, lost_after_s: float = 10.0):
        self.hub, self.servers = hub, servers
        self.models: dict[str, Model] = {}
        self.used_memory = UsedMemory(self.models)  # kept up to date by the scheduler
        self.updated = Stamps(hub.bus, ModelChanged)
        self.replicas: dict[str, Replica] = {}
        self.agents: dict[str, asyncio.Queue] = {}
        # A replica whose agent stays away this long is lost: its models are placed afresh.
        # Shorter than this (an agent restarting), its models stay put and keep their routes.
        self.lost_after_s = lost_after_s
        self._lost_timers: dict[str, asyncio.TimerHandle] = {}
        self.drainer = Drainer(self)
        # replicas the server autoscaler has emptied and is stopping: forgotten as soon as
        # their agent goes, with no wait for it to come back
        self.released: set[str] = set()

    def changed(self, name: str) -> None:
        self.hub.bus.publish(ModelChanged(name))

    # ---- desired state -------------------------------------------------------------------
    def apply(self, name: str, spec: ModelSpec) -> Model:
        self._check_satisfiable(spec)
        m = self.models.get(name)
        if m is None:
            m = self.models[name] = Model(name)
        current = m.versions[-1] if m.versions else None
        if current and not m.deleted and current.state != st.TERMINATED and \
                current.spec.version_key() == spec.version_key():
            current.spec = spec  # replicas only: scale the current version
            self._schedule(m, current)
        else:
            v = ModelVersion(name, (current.version + 1) if current else 1, spec)
            if current and current.scaled is not None and spec.autoscaled:
                # a rollout under load starts with the replicas the load needed
                v.scaled = current.scaled
                v.scale_reason = f"kept from version {current.version}: {current.scale_reason}"
            m.versions.append(v)
            m.deleted = False
            self._schedule(m, v)
        self.changed(m.name)
        return m

    def _check_satisfiable(self, spec: ModelSpec) -> None:
        """Refuse requirements that no known server offers, by its Server spec or its agents'
        capabilities. With no server known yet, or a pinned server not known yet, the model is
        accepted and waits (ScheduleFailed): servers may still come."""
        wanted = set(spec.requirements)
        offers: dict[str, set[str]] = {}
        for server, doc in self.servers.docs.items():
            offers[server] = set(ServerSpec.model_validate(doc["spec"]).all_capabilities())
        for r in self.replicas.values():
            offers.setdefault(r.server, set()).update(r.capabilities)
        if spec.server:
            if spec.server not in offers:
                return
            offers = {spec.server: offers[spec.server]}
        if not wanted or not offers or any(wanted <= caps for caps in offers.values()):
            return
        lacks = "; ".join(f"{s} lacks {', '.join(sorted(wanted - caps))}"
                          for s, caps in sorted(offers.items()))
        raise Unsatisfiable(f"spec.requirements: no server offers {', '.join(sorted(wanted))} "
                            f"({lacks})")

    def is_live(self, name: str) -> bool:
        """The model exists and a version of it is Available."""
        m = self.models.get(name)
        return m is not None and not m.deleted and m.live_version() is not None

    def delete(self, name: str) -> Model:
        m = self.models.get(name)
        if m is None:
            raise NotFound(f"model {name!r} not found")
        if m.deleted:
            return m
        m.deleted = True
        for v in m.versions:
            self._terminate(v)
        self._cleanup(m)
        self.changed(name)
        return m

    # ---- placement -----------------------------------------------------------------------
    def _used_memory(self, exclude: ModelVersion) -> dict[str, int]:
        return self.used_memory.without(exclude)

    @staticmethod
    def want(v: ModelVersion) -> int:
        """Replicas the version should have: the autoscaler's choice, kept within the spec's
        minReplicas..maxReplicas, or the spec's own count."""
        spec = v.spec
        if v.scaled is not None and spec.autoscaled:
            return min(max(v.scaled, spec.scale_floor), spec.maxReplicas or v.scaled)
        return spec.desired_replicas

    def _schedule(self, m: Model, v: ModelVersion) -> None:
        spec = v.spec
        want = self.want(v)
        holding = {x.server for x in m.versions if x.replicas and x is not v}
        try:
            if want == 0:
                chosen = []
            else:
                p = place(requirements=spec.requirements, memory=spec.memory_bytes, want=want,
                          minimum=spec.minReplicas or want, pinned=v.server or spec.server,
                          replicas=list(self.replicas.values()),
                          used=self._used_memory(v), holding=holding,
                          loaded_on={f"{v.server}/{i}" for i, r in v.replicas.items()
                                     if r.state in st.SERVING})
                v.server, chosen = p.server, p.replicas
                v.reason = f"scheduled on {len(chosen)} of {want} replicas" if p.partial else ""
        except PlacementError as e:
            if not v.serving_replicas():
                v.state, v.reason = st.SCHEDULE_FAILED, str(e)
                log.info("model ScheduleFailed", extra={"model": m.name, "version": v.version,
                                                        "reason": str(e)})
            return
        for idx in chosen:
            if idx not in v.replicas or v.replicas[idx].state in (st.LOAD_FAILED, st.UNLOADED):
                v.replicas[idx] = ReplicaState(st.LOAD_REQUESTED)
                self._send(v, idx, Op.LOAD)
        for idx in list(v.replicas):
            if idx not in chosen and v.replicas[idx].state not in st.LEAVING:
                self._unload(v, idx)
        self._refresh(m, v)

    def retry_unscheduled(self) -> None:
        """On an agent's connect: place models that wait (ScheduleFailed, ModelFailed) and
        top up versions left on fewer replicas than asked (a replica was lost meanwhile)."""
        for m in list(self.models.values()):
            if m.deleted or not m.versions:
                continue
            v = m.latest
            if v.state in (st.SCHEDULE_FAILED, st.FAILED):
                if v.state == st.FAILED and not v.serving_replicas():
                    v.server, v.replicas = "", {}  # place afresh: failed replicas hold nothing
                v.state = st.PROGRESSING
            elif not self._short_of_replicas(v):
                continue
            self._schedule(m, v)
            self.changed(m.name)

    @staticmethod
    def _short_of_replicas(v: ModelVersion) -> bool:
        if v.state not in (st.AVAILABLE, st.PROGRESSING):
            return False
        placed = [i for i, r in v.replicas.items() if r.state not in st.LEAVING]
        return len(placed) < ModelManager.want(v)

    # ---- agent operations ----------------------------------------------------------------
    def _send(self, v: ModelVersion, idx: int, op: "agent_pb2.ModelOperation.Op") -> None:
        q = self.agents.get(f"{v.server}/{idx}")
        if q is None:
            return  # sent again by reconcile() when the agent connects
        q.put_nowait(Op(op=op, model=agent_pb2.ModelRef(
            name=v.model, version=v.version, internal_name=v.internal_name),
            spec_json=v.spec.model_dump_json(exclude_none=True),
            memory_bytes=v.spec.memory_bytes))

    def _unload(self, v: ModelVersion, idx: int) -> None:
        v.replicas[idx].state = st.UNLOAD_REQUESTED
        self.hub.spawn(self._unload_after_routes(v, idx))

    async def _unload_after_routes(self, v: ModelVersion, idx: int) -> None:
        # Make before break: Envoy stops sending traffic to the replica before it unloads.
        await self.hub.publish_routes(changed_model=v.model)
        if idx in v.replicas and v.replicas[idx].state == st.UNLOAD_REQUESTED:
            if f"{v.server}/{idx}" in self.agents:
                self._send(v, idx, Op.UNLOAD)
            else:
                del v.replicas[idx]  # nothing to unload from: the agent is gone
                self._after_unload(v)

    def _terminate(self, v: ModelVersion) -> None:
        if v.state == st.TERMINATED:
            return
        v.state, v.reason = st.TERMINATING, ""
        for idx in list(v.replicas):
            if v.replicas[idx].state not in st.LEAVING:
                self._unload(v, idx)
        if not v.replicas:
            v.state = st.TERMINATED

    def _after_unload(self, v: ModelVersion) -> None:
        m = self.models.get(v.model)
        if m is None:
            return
        if v.state == st.TERMINATING and not v.replicas:
            v.state = st.TERMINATED
        self._cleanup(m)
        self.changed(m.name)

    def _cleanup(self, m: Model) -> None:
        """Forget terminated versions (keeping the latest, for its status)."""
        m.versions = [v for v in m.versions[:-1] if v.state != st.TERMINATED] + m.versions[-1:]
        if m.deleted and all(v.state == st.TERMINATED for v in m.versions):
            del self.models[m.name]  # (the scheduler forgets it on the ModelChanged)

    # ---- state ---------------------------------------------------------------------------
    def _refresh(self, m: Model, v: ModelVersion) -> None:
        if v.state in (st.TERMINATING, st.TERMINATED):
            return
        want = self.want(v)
        # A copy on a draining replica still serves but no longer counts as placed: the
        # version stays Available while its replacement loads (make before break).
        placed = [i for i, r in v.replicas.items()
                  if r.state not in st.LEAVING and not self.is_draining(v.server, i)]
        failed = [(i, r) for i, r in v.replicas.items() if r.state == st.LOAD_FAILED]
        available = v.available_replicas()
        if failed:
            i, r = failed[0]
            v.state, v.reason = st.FAILED, f"{v.server}/{i}: {r.reason}"
        elif want == 0:
            v.state = st.SCALED_DOWN
        elif available and (len(available) >= len(placed) or
                            (v.scaled is not None and v.state == st.AVAILABLE)):
            v.state = st.AVAILABLE  # (an autoscaled version stays so while it scales)
        elif v.state != st.SCHEDULE_FAILED:
            v.state = st.PROGRESSING
        if v.state == st.AVAILABLE and v is m.latest:
            for old in m.versions[:-1]:
                self._terminate(old)

    def is_draining(self, server: str, idx: int) -> bool:
        r = self.replicas.get(f"{server}/{idx}")
        return r is not None and r.draining

    async def on_event(self, ev: agent_pb2.ModelEvent) -> bool:
        """An agent's event; returns whether the resulting routes reached Envoy."""
        key = f"{ev.server_name}/{ev.replica_idx}"
        if key in self.replicas:
            self.replicas[key].available_memory = ev.available_memory_bytes
        m = self.models.get(ev.model.name)
        if m is None:
            return True
        v = next((x for x in m.versions if x.version == ev.model.version), None)
        if v is None or ev.replica_idx not in v.replicas or v.server != ev.server_name:
            return True
        r = v.replicas[ev.replica_idx]
        routes = False
        if ev.event == Ev.LOADING:
            r.state = st.LOADING
        elif ev.event == Ev.LOADED:
            if r.state in st.LEAVING:
                return True
            r.state, r.reason, r.evicted = st.LOADED, "", False
            self.changed(m.name)
            applied = await self.hub.publish_routes()
            if r.state == st.LOADED:
                r.state = st.R_AVAILABLE
                if not applied:
                    r.reason = "Envoy has not acknowledged the route yet"
        elif ev.event == Ev.LOAD_FAILED:
            r.state, r.reason = st.LOAD_FAILED, ev.reason or "load failed"
        elif ev.event == Ev.UNLOADING:
            r.state = st.UNLOADING
        elif ev.event in (Ev.UNLOADED, Ev.UNLOAD_FAILED):
            del v.replicas[ev.replica_idx]
            self._after_unload(v)
            return True
        elif ev.event == Ev.EVICTING:
            r.evicted = True
            routes = True
        elif ev.event == Ev.RESIDENT:
            r.evicted = False
            routes = True
        self._refresh(m, v)
        if ev.event == Ev.LOADED:
            # An older version this one replaces has just left the routes: Envoy has that
            # before a watcher hears "Available", so a request sent after it reaches this one.
            await self.hub.publish_routes(changed_model=m.name)
        self.changed(m.name)
        return await self.hub.publish_routes() if routes else True

    # ---- agents --------------------------------------------------------------------------
    def connect(self, replica: Replica, loaded: set[str], evicted: set[str]) -> asyncio.Queue:
        if timer := self._lost_timers.pop(replica.key, None):
            timer.cancel()
        replica.connected = True
        self.replicas[replica.key] = replica
        self.hub.store.put("replica", replica.key, replica.to_doc())
        q: asyncio.Queue = asyncio.Queue()
        self.agents[replica.key] = q
        # Place waiting models first: one may land here and find its copy still held, which
        # must not be unloaded below as unknown.
        self.retry_unscheduled()
        known = set()
        for m, v in self._versions_on(replica):
            known.add(v.internal_name)
            r = v.replicas[replica.idx]
            held = v.internal_name in loaded or v.internal_name in evicted
            if r.state in st.LEAVING:
                if held:
                    self._send(v, replica.idx, Op.UNLOAD)
                else:
                    del v.replicas[replica.idx]
                    self._after_unload(v)
            elif held and r.state != st.LOAD_FAILED:
                # Already routed (e.g. before a scheduler restart) stays Available; newly
                # found here becomes Available once Envoy has its route (below).
                r.state = st.R_AVAILABLE if r.state in st.SERVING else st.LOADED
                r.evicted = v.internal_name in evicted
            elif r.state != st.LOAD_FAILED:
                r.state = st.LOAD_REQUESTED
                self._send(v, replica.idx, Op.LOAD)
            self._refresh(m, v)
            self.changed(m.name)
        for internal in (loaded | evicted) - known:
            name, _, version = internal.rpartition("_")
            q.put_nowait(Op(op=Op.UNLOAD, model=agent_pb2.ModelRef(
                name=name, version=int(version) if version.isdigit() else 0,
                internal_name=internal)))
        self.hub.spawn(self._routed_then_available(replica))
        return q

    async def _routed_then_available(self, replica: Replica) -> None:
        await self.hub.publish_routes()
        for m, v in self._versions_on(replica):
            r = v.replicas[replica.idx]
            if r.state == st.LOADED:
                r.state = st.R_AVAILABLE
                self._refresh(m, v)
                self.changed(m.name)

    def _versions_on(self, replica: Replica) -> Iterator[tuple[Model, ModelVersion]]:
        """(model, version) for each version placed on `replica`; the caller may change
        models and versions while iterating."""
        for m in list(self.models.values()):
            for v in list(m.versions):
                if v.server == replica.server and replica.idx in v.replicas:
                    yield m, v

    def disconnect(self, replica: Replica, q: asyncio.Queue) -> None:
        if self.agents.get(replica.key) is q:
            del self.agents[replica.key]
            replica.connected = False
            self.hub.bus.publish(ServerChanged(replica.server))
            if replica.key in self.released:  # emptied by the autoscaler: not coming back
                self.released.discard(replica.key)
                self._lose(replica.key)
            else:
                self.watch_lost(replica.key)

    def watch_lost(self, key: str) -> None:
        """Declare `key` lost unless its agent connects within `lost_after_s` (also used at
        start-up for replicas known from the store that have not connected yet)."""
        if key not in self._lost_timers:
            self._lost_timers[key] = asyncio.get_running_loop().call_later(
                self.lost_after_s, self._lose, key)

    def _lose(self, key: str) -> None:
        """Forget a replica that did not come back, and place its models elsewhere."""
        self._lost_timers.pop(key, None)
        replica = self.replicas.get(key)
        if replica is None or replica.connected:
            return
        log.warning("server replica lost", extra={"replica": key,
                                                  "disconnected_s": self.lost_after_s})
        del self.replicas[key]
        self.hub.store.delete("replica", key)
        for m, v in self._versions_on(replica):
            del v.replicas[replica.idx]
            if not v.replicas:
                v.server = ""  # nothing left where it was: any server may take it
            if v is m.latest and not m.deleted and v.state != st.TERMINATING:
                self._schedule(m, v)
                if v.state == st.SCHEDULE_FAILED:
                    v.reason = f"server replica {key} lost; {v.reason}"
            elif not v.replicas or v.state == st.TERMINATING:
                self._terminate(v)
                self._after_unload(v)
            if m.name in self.models:
                self.changed(m.name)
        self.hub.bus.publish(ServerChanged(replica.server))
        self.hub.spawn(self.hub.publish_routes())
