"""The scheduler keeps its per-replica used memory and its routing snapshot between changes
(issue 11: a change costs O(changed)). After a random series of loads, load failures,
unloads, new versions, deletions, evictions, replica losses and returns (fixed seed), both
must equal what a from-scratch walk over every model gives; a change must write only the
record of the model it changed. No processes: a real Scheduler, agents played by the test."""

import asyncio
import random

from runtime.pb import agent_pb2
from runtime.scheduler import snapshot
from runtime.scheduler import state as st
from runtime.scheduler.core import Scheduler
from runtime.scheduler.placement import used_from_scratch
from runtime.scheduler.store import Store
from runtime.scheduler.xds import XdsServer
from runtime.specs import ModelSpec

Ev = agent_pb2.ModelEvent
Op = agent_pb2.ModelOperation
MIB = 2**20
REPLICAS = [("a", 0), ("a", 1), ("b", 0)]


class NoEnvoy(XdsServer):
    """Routes count as applied at once (no Envoy in this test)."""

    async def wait_applied(self, generation: int, timeout: float = 0) -> bool:
        return True


class Agents:
    """Plays each replica's agent: takes the scheduler's operations, answers with events."""

    def __init__(self, hub: Scheduler, rng: random.Random, fail_rate: float = 0.15):
        self.hub, self.rng, self.fail_rate = hub, rng, fail_rate
        self.queues: dict[str, asyncio.Queue] = {}
        self.holds: dict[str, set[str]] = {}       # key -> internal names loaded
        self.evicted: dict[str, set[str]] = {}

    def connect(self, server: str, idx: int) -> None:
        key = f"{server}/{idx}"
        replica = st.Replica(server, idx, ["sklearn"], 64 * MIB, 50, "127.0.0.1",
                             9000 + idx, 9100 + idx, 9200 + idx, 9300 + idx,
                             available_memory=64 * MIB)
        holds, evicted = self.holds.setdefault(key, set()), self.evicted.setdefault(key, set())
        self.queues[key] = self.hub.models.connect(replica, holds - evicted, set(evicted))

    def lose(self, key: str) -> None:
        """The agent goes and does not come back in time: its models are placed afresh."""
        self.hub.models.disconnect(self.hub.models.replicas[key], self.queues.pop(key))
        self.hub.models._lose(key)
        self.holds.pop(key, None)
        self.evicted.pop(key, None)

    def _event(self, key: str, model: agent_pb2.ModelRef, event: int, reason: str = ""):
        server, _, idx = key.partition("/")
        return Ev(server_name=server, replica_idx=int(idx), model=model, event=event,
                  reason=reason, available_memory_bytes=MIB)

    async def answer_one(self) -> bool:
        """Answer one pending operation of a random agent; False if none is pending."""
        pending = [k for k, q in self.queues.items() if not q.empty()]
        if not pending:
            return False
        key = self.rng.choice(pending)
        op = self.queues[key].get_nowait()
        name = op.model.internal_name
        if op.op == Op.LOAD:
            await self.hub.models.on_event(self._event(key, op.model, Ev.LOADING))
            if self.rng.random() < self.fail_rate:
                await self.hub.models.on_event(
                    self._event(key, op.model, Ev.LOAD_FAILED, "no such artifact"))
                return True
            self.holds[key].add(name)
            await self.hub.models.on_event(self._event(key, op.model, Ev.LOADED))
        else:
            self.holds[key].discard(name)
            self.evicted[key].discard(name)
            await self.hub.models.on_event(self._event(key, op.model, Ev.UNLOADING))
            await self.hub.models.on_event(self._event(key, op.model, Ev.UNLOADED))
        return True

    async def evict_or_reload(self) -> None:
        key = self.rng.choice(sorted(self.queues))
        held = sorted(self.holds.get(key, ()))
        if not held:
            return
        name = self.rng.choice(held)
        model, _, version = name.rpartition("_")
        ref = agent_pb2.ModelRef(name=model, version=int(version), internal_name=name)
        if name in self.evicted[key]:
            self.evicted[key].discard(name)
            await self.hub.models.on_event(self._event(key, ref, Ev.RESIDENT))
        else:
            self.evicted[key].add(name)
            await self.hub.models.on_event(self._event(key, ref, Ev.EVICTING))


def _assert_kept_equals_scratch(hub: Scheduler) -> None:
    models = hub.models.models
    assert hub.used_memory.without() == used_from_scratch(models)
    for m in models.values():  # as placement asks: all but the version being placed
        for v in m.versions:
            assert hub.used_memory.without(v) == used_from_scratch(models, exclude=v)
    kept, scratch = hub.routing.snapshot(), snapshot.build(hub)
    assert kept.backends == scratch.backends
    assert kept.routes == scratch.routes


async def _random_series(tmp_path, seed: int, steps: int) -> dict[str, int]:
    rng = random.Random(seed)
    hub = Scheduler(Store(tmp_path / "scheduler"), NoEnvoy(), replica_lost_after_s=3600)
    agents = Agents(hub, rng)
    for server, idx in REPLICAS:
        agents.connect(server, idx)
    done: dict[str, int] = {}
    for _ in range(steps):
        action = rng.choices(["apply", "answer", "delete", "evict", "lose", "return"],
                             weights=[5, 12, 1, 2, 0.5, 0.7])[0]
        names = sorted(hub.models.models)
        if action == "apply":
            name = rng.choice(names + [f"m{len(names)}"] * 2)
            spec = ModelSpec(storageUri=f"/models/{name}", requirements=["sklearn"],
                             memory=f"{rng.choice([4, 8, 16])}Mi",
                             replicas=rng.choice([1, 1, 2]))
            hub.models.apply(name, spec)
        elif action == "answer":
            action = action if await agents.answer_one() else "idle"
        elif action == "delete" and names:
            hub.models.delete(rng.choice(names))
        elif action == "evict" and agents.queues:
            await agents.evict_or_reload()
        elif action == "lose" and len(agents.queues) > 1:
            agents.lose(rng.choice(sorted(agents.queues)))
        elif action == "return":
            gone = [(s, i) for s, i in REPLICAS if f"{s}/{i}" not in agents.queues]
            if gone:
                agents.connect(*rng.choice(gone))
        for _ in range(3):  # let spawned route publications and unloads run
            await asyncio.sleep(0)
        done[action] = done.get(action, 0) + 1
        _assert_kept_equals_scratch(hub)
    while await agents.answer_one():
        await asyncio.sleep(0)
    _assert_kept_equals_scratch(hub)
    assert any(v.replicas for m in hub.models.models.values() for v in m.versions)
    hub.store.close()
    return done


def test_kept_used_memory_and_routes_equal_a_recomputation(tmp_path):
    done = asyncio.run(_random_series(tmp_path, seed=11, steps=600))
    # the series did exercise every kind of change
    assert {"apply", "answer", "delete", "evict", "lose", "return"} <= set(done), done


def test_a_change_writes_only_its_own_model(tmp_path):
    async def run():
        hub = Scheduler(Store(tmp_path / "scheduler"), NoEnvoy())
        agents = Agents(hub, random.Random(1), fail_rate=0)
        agents.connect("a", 0)
        for i in range(20):
            hub.models.apply(f"m{i}", ModelSpec(storageUri="/m", requirements=["sklearn"]))
        while await agents.answer_one():
            pass
        for _ in range(3):
            await asyncio.sleep(0)
        writes = []  # (kind, name) of each row SQLite writes
        hub.store.db.set_trace_callback(
            lambda sql: writes.append(tuple(sql.split("'")[1:4:2]))
            if sql.startswith("INSERT") else None)
        hub.models.apply("m3", ModelSpec(storageUri="/m", requirements=["sklearn"],
                                         replicas=0))
        while await agents.answer_one():
            await asyncio.sleep(0)
        # a replica's agent reconnecting (same models held) rewrites nothing
        agents.queues.pop("a/0")
        hub.models.disconnect(hub.models.replicas["a/0"], hub.models.agents["a/0"])
        agents.connect("a", 0)
        for _ in range(3):
            await asyncio.sleep(0)
        hub.store.close()
        return writes

    writes = asyncio.run(run())
    assert {name for kind, name in writes if kind == "model"} == {"m3"}, writes


def test_a_version_record_keeps_every_replica_field():
    v = st.ModelVersion("iris", 2, ModelSpec(storageUri="/m"), st.AVAILABLE, "", "s",
                        {0: st.ReplicaState(st.R_AVAILABLE, "why", evicted=True)})
    assert st.ModelVersion.from_doc("iris", v.to_doc()) == v


def test_envoy_streams_get_only_what_changed_even_when_far_behind():
    """A stream that pushed recently compares only the routes changed since; one so far
    behind that the change log no longer reaches back compares everything; both end up
    holding exactly the newest routes."""
    from types import SimpleNamespace

    from runtime.scheduler import envoy_resources as er
    from runtime.scheduler.xds import _Stream

    replica = st.Replica("s", 0, ["sklearn"], 10**9, 0, "127.0.0.1", 1, 2, 3, 4)
    models = {f"m{i}": st.Model(f"m{i}", [st.ModelVersion(
        f"m{i}", 1, ModelSpec(storageUri="/m"), st.AVAILABLE, server="s",
        replicas={0: st.ReplicaState(st.R_AVAILABLE)})]) for i in range(300)}
    hub = SimpleNamespace(
        models=SimpleNamespace(models=models, replicas={"s/0": replica}),
        pipeline_gateway=None, feedback=None, pipelines=SimpleNamespace(docs={}),
        experiments=SimpleNamespace(routes=lambda targets: ([], set())))
    routing = snapshot.Routing(hub)

    async def push(xds, stream) -> list[str]:
        _, routes = xds._scoped(routing.snapshot())
        stream.subscribed[er.ROUTE_TYPE] = set(routes)
        if not await xds._push(stream, er.ROUTE_TYPE, routes):
            return []
        return sorted(r.name for r in stream.outbox.get_nowait().resources)

    async def run():
        xds = NoEnvoy()
        xds._route_res.log.keep = 4  # a short memory, to fall behind it
        near, far = _Stream("near"), _Stream("far")
        assert len(await push(xds, near)) == len(await push(xds, far)) == 300
        checked = []
        to_check = xds._to_check
        xds._to_check = lambda *a: checked.append(to_check(*a)) or checked[-1]
        for i in (7, 8):  # one model changes; `near` pushes after each change
            models[f"m{i}"].versions[0].replicas[0].evicted = True
            routing.touch(f"m{i}")
            assert await push(xds, near) == [f"route:m{i}"]
        assert checked == [{"route:m7"}, {"route:m8"}]  # not the 300 routes
        for i in range(9, 20):  # `far` is left behind by more changes than the log keeps
            models[f"m{i}"].versions[0].replicas[0].evicted = True
            routing.touch(f"m{i}")
            xds._scoped(routing.snapshot())
        sent = await push(xds, far)
        assert checked[-1] is None  # compared everything
        assert sent == sorted(f"route:m{i}" for i in range(7, 20))
        _, routes = xds._scoped(routing.snapshot())
        assert far.held[er.ROUTE_TYPE] == {n: v for n, (v, _) in routes.items()}
        assert not far.lacking[er.ROUTE_TYPE]

    asyncio.run(run())
