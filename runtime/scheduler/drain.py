"""Draining a server replica that is going away (Kubernetes preStop: node drain, rollout,
scale-down), as Seldon's agent does with AgentDrain.

The replica is marked draining, so placement skips it. Each model version it holds gets a new
copy on the server's other replicas (placement's own filters: capabilities, memory, the pinned
server); the draining copy keeps serving until the new copies are Available, then it is
unrouted and unloaded (make before break). A version that cannot move stays served by the
draining replica until the pod really dies. A version lives on one server, so a copy moves
between replicas of that server."""

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.pb import agent_pb2
from runtime.scheduler import state as st
from runtime.scheduler.events import ModelChanged, ServerChanged
from runtime.scheduler.placement import PlacementError, place
from runtime.scheduler.state import Model, ModelVersion, Replica, ReplicaState

if TYPE_CHECKING:
    from runtime.scheduler.models import ModelManager

log = logging.getLogger(__name__)
Op = agent_pb2.ModelOperation


class DrainError(Exception):
    """The replica cannot be drained; the message says why."""


@dataclass
class Outcome:
    model: str
    version: int
    server: str
    moved: bool
    replicas: list[int] = field(default_factory=list)  # serving it now
    reason: str = ""


class Drainer:
    def __init__(self, manager: "ModelManager"):
        self.mm = manager
        # one move per (replica, version): a repeated drain call waits on the same move
        self._moves: dict[tuple[str, str], asyncio.Task[Outcome]] = {}

    async def drain(self, server: str, idx: int, timeout: float) -> list[Outcome]:
        key = f"{server}/{idx}"
        replica = self.mm.replicas.get(key)
        if replica is None:
            raise DrainError(f"server replica {key} is not known to the scheduler")
        if not replica.connected:
            raise DrainError(f"server replica {key} is not connected (its models move when "
                             "it is declared lost)")
        if not replica.draining:
            replica.draining = True
            log.info("draining server replica %s", key)
            self.mm.hub.bus.publish(ServerChanged(server))
        outcomes: list[Outcome] = []
        waiting: dict[asyncio.Task[Outcome], ModelVersion] = {}
        for m, v in list(self.mm._versions_on(replica)):
            if m.deleted or v.state in (st.TERMINATING, st.TERMINATED) or \
                    v.replicas[idx].state in st.LEAVING | {st.LOAD_FAILED}:
                continue  # going away already, or holds nothing here
            task = self._moves.get((key, v.internal_name))
            if task is None:
                started = self._start(m, v, replica)
                if isinstance(started, Outcome):
                    outcomes.append(started)
                    continue
                move = (key, v.internal_name)
                task = self._moves[move] = started
                task.add_done_callback(functools.partial(self._moved, move))
            waiting[task] = v
        if waiting:
            # Moves still under way at the deadline go on in the background: the draining
            # copy is unrouted as soon as its replacement is Available.
            await asyncio.wait(waiting, timeout=timeout)
        for task, v in waiting.items():
            if task.done():
                outcomes.append(task.result())
            else:
                outcomes.append(Outcome(v.model, v.version, v.server, False,
                                        v.serving_replicas(),
                                        f"not Available elsewhere within {timeout:.0f}s "
                                        f"({_states(v, exclude=idx)})"))
        # Answer once Envoy no longer routes the moved copies to the draining replica.
        await self.mm.hub.publish_routes()
        return sorted(outcomes, key=lambda o: (o.model, o.version))

    def _moved(self, move: tuple[str, str], _task: "asyncio.Task[Outcome]") -> None:
        self._moves.pop(move, None)

    def _start(self, m: Model, v: ModelVersion, replica: Replica
               ) -> "Outcome | asyncio.Task[Outcome]":
        """Place the draining copy's replacement and load it; the task finishes the move."""
        d = replica.idx
        others = [i for i, r in v.replicas.items()
                  if i != d and r.state not in st.LEAVING | {st.LOAD_FAILED}]
        want = len(others) + 1  # as many copies as now, none of them on the draining replica
        try:
            p = place(requirements=v.spec.requirements, memory=v.spec.memory_bytes, want=want,
                      minimum=1, pinned=v.server, replicas=list(self.mm.replicas.values()),
                      used=self.mm._used_memory(v), holding={v.server},
                      loaded_on={f"{v.server}/{i}" for i in v.serving_replicas()})
        except PlacementError as e:
            log.info("drain %s: %s v%d cannot move: %s", replica.key, m.name, v.version, e)
            return Outcome(m.name, v.version, v.server, False, v.serving_replicas(),
                           f"no other replica fits: {e}")
        for i in p.replicas:
            if i not in v.replicas or v.replicas[i].state in (st.LOAD_FAILED, st.UNLOADED):
                v.replicas[i] = ReplicaState(st.LOAD_REQUESTED)
                self.mm._send(v, i, Op.LOAD)
        self.mm._refresh(m, v)
        self.mm.changed(m.name)
        note = (f"served on {len(p.replicas)} of {want} replicas: no other replica fits "
                "more" if p.partial else "")
        return asyncio.get_running_loop().create_task(
            self._finish(m, v, replica, p.replicas, note))

    async def _finish(self, m: Model, v: ModelVersion, replica: Replica, targets: list[int],
                      note: str) -> Outcome:
        d = replica.idx
        q: asyncio.Queue[str] = asyncio.Queue()
        unsubscribe = self.mm.hub.bus.subscribe(  # woken by every change to the model
            ModelChanged, lambda e: q.put_nowait(e.name), m.name)
        try:
            while True:
                if self.mm.replicas.get(replica.key) is not replica or not replica.draining:
                    return Outcome(m.name, v.version, v.server, False, v.serving_replicas(),
                                   "drain abandoned: the replica reconnected")
                if v.state in (st.TERMINATING, st.TERMINATED) or m.deleted:
                    return Outcome(m.name, v.version, v.server, True, [],
                                   "version is being unloaded")
                if failure := self._failed(m, v, targets):
                    return Outcome(m.name, v.version, v.server, False, v.serving_replicas(),
                                   failure)
                if all(v.replicas[i].state == st.R_AVAILABLE for i in targets):
                    break
                await q.get()
        finally:
            unsubscribe()
        if d in v.replicas and v.replicas[d].state not in st.LEAVING:
            self.mm._unload(v, d)  # routes first, then the agent unloads
            self.mm._refresh(m, v)
            self.mm.changed(m.name)
        log.info("drain %s: %s v%d moved to %s", replica.key, m.name, v.version, targets)
        return Outcome(m.name, v.version, v.server, True, sorted(targets), note)

    def _failed(self, m: Model, v: ModelVersion, targets: list[int]) -> str:
        for i in targets:
            r = v.replicas.get(i)
            if r is None or r.state in st.LEAVING:
                return f"the new copy on {v.server}/{i} was unloaded"
            if r.state == st.LOAD_FAILED:
                # Unload the failed copy so the version is not reported failed: the draining
                # copy still serves it.
                reason = r.reason
                self.mm._unload(v, i)
                self.mm._refresh(m, v)
                self.mm.changed(m.name)
                return f"loading on {v.server}/{i} failed: {reason}"
        return ""


def _states(v: ModelVersion, exclude: int) -> str:
    return ", ".join(f"{v.server}/{i} {r.state}" for i, r in sorted(v.replicas.items())
                     if i != exclude) or "no other copy"
