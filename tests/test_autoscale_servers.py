"""The autoscalers' decisions that need a scheduler, in process (a real Scheduler, agents
played by the test as in test_bookkeeping): a server grows when a model wants more replicas
than it has, waits a cool-down between changes, shrinks only when the memory fits on fewer
replicas and only after the leaving replica is drained; a model's new version starts with the
replicas its load needed."""

import asyncio
import random

from runtime.scheduler import state as st
from runtime.scheduler.autoscale import AutoscaleConfig
from runtime.scheduler.core import Scheduler
from runtime.scheduler.store import Store
from runtime.specs import ModelSpec
from runtime.specs.server import ServerSpec
from tests.test_bookkeeping import Agents, NoEnvoy

COOLDOWN = 30.0


def _hub(tmp_path) -> tuple[Scheduler, Agents]:
    hub = Scheduler(Store(tmp_path / "scheduler"), NoEnvoy(), replica_lost_after_s=3600,
                    autoscale=AutoscaleConfig(servers=True, serverCooldownSeconds=COOLDOWN))
    hub.servers.apply("s", ServerSpec(replicas=2, minReplicas=1, maxReplicas=3))
    agents = Agents(hub, random.Random(0), fail_rate=0)
    for idx in (0, 1):
        agents.connect("s", idx)  # 64 MiB each, 50% over-commit: room for 96 MiB
    return hub, agents


async def _settle(agents: Agents, until=None, rounds: int = 300) -> None:
    """Answer the agents' operations and let spawned tasks run: until `until()` holds, or
    without one, until nothing is left to answer."""
    for _ in range(rounds):
        answered = await agents.answer_one()
        await asyncio.sleep(0.005)
        if until() if until else not answered and all(q.empty() for q in
                                                        agents.queues.values()):
            return
    raise AssertionError("the agents' operations did not settle")


def _model(hub: Scheduler, name: str, memory: str, replicas: int = 1) -> None:
    hub.models.apply(name, ModelSpec(storageUri=f"/m/{name}", requirements=["sklearn"],
                                     memory=memory, replicas=replicas, minReplicas=1,
                                     server="s"))


def test_a_server_grows_when_a_model_wants_more_replicas_after_its_cooldown(tmp_path):
    async def run():
        hub, agents = _hub(tmp_path)
        scaler = hub.autoscaler.servers
        _model(hub, "m", "8Mi", replicas=3)  # placed on the 2 replicas there are
        await _settle(agents)
        scaler.tick(0.0)                     # first sight: starts from the 2 it has
        assert scaler.targets["s"] == 2
        scaler.tick(COOLDOWN - 1)            # a fresh server waits a cool-down first
        assert scaler.targets["s"] == 2
        scaler.tick(COOLDOWN)
        assert scaler.targets["s"] == 3 and scaler.reasons["s"] == "model m wants 3 replicas"
        scaler.tick(3 * COOLDOWN)            # the new replica is not there yet: wait
        assert scaler.targets["s"] == 3
        agents.connect("s", 2)               # it comes: m is topped up to 3 replicas
        await _settle(agents)
        assert hub.models.models["m"].latest.available_replicas() == [0, 1, 2]
        scaler.tick(4 * COOLDOWN)
        assert scaler.targets["s"] == 3      # at maxReplicas and wanted: stays
    asyncio.run(run())


def test_a_server_shrinks_only_when_the_memory_fits_and_after_draining(tmp_path):
    async def run():
        hub, agents = _hub(tmp_path)
        scaler = hub.autoscaler.servers
        _model(hub, "a", "60Mi")
        _model(hub, "b", "60Mi")   # 120 MiB: one replica (96) cannot hold both
        await _settle(agents)
        placed = {m: hub.models.models[m].latest.replicas.keys() for m in ("a", "b")}
        assert sorted(i for keys in placed.values() for i in keys) == [0, 1]
        scaler.tick(0.0)
        scaler.tick(COOLDOWN)
        assert scaler.targets["s"] == 2 and not scaler.scaling_in

        hub.models.delete(next(m for m, keys in placed.items() if 0 in keys))
        await _settle(agents)
        scaler.tick(2 * COOLDOWN)  # fits now: replica 1 drains, its model moves to 0
        await asyncio.sleep(0)     # (the drain starts)
        assert scaler.scaling_in == {"s"} and hub.models.replicas["s/1"].draining
        assert scaler.targets["s"] == 2  # not lowered before the drain is done
        await _settle(agents, until=lambda: not scaler.scaling_in)
        assert scaler.targets["s"] == 1 and "s/1 drained" in scaler.reasons["s"]
        [left] = [m for m in hub.models.models.values() if not m.deleted]
        assert left.latest.replicas[0].state == st.R_AVAILABLE  # before the old copy goes
        await _settle(agents)
        assert {i: r.state for i, r in left.latest.replicas.items()} == {0: st.R_AVAILABLE}
        assert "s/1" in hub.models.released  # forgotten as soon as its agent goes
    asyncio.run(run())


def test_a_lowered_max_replicas_drains_one_replica_at_a_time(tmp_path):
    async def run():
        hub, agents = _hub(tmp_path)
        scaler = hub.autoscaler.servers
        _model(hub, "m", "8Mi", replicas=2)
        await _settle(agents)
        scaler.tick(0.0)
        hub.servers.apply("s", ServerSpec(replicas=2, minReplicas=1, maxReplicas=1))
        scaler.tick(COOLDOWN)  # over the new maximum: drained first, even though m wants 2
        await _settle(agents, until=lambda: not scaler.scaling_in)
        assert scaler.targets["s"] == 1 and scaler.reasons["s"].startswith("maxReplicas is 1")
        await _settle(agents)
        assert hub.models.models["m"].latest.available_replicas() == [0]
    asyncio.run(run())


def test_a_new_version_starts_with_the_replicas_the_load_needed(tmp_path):
    async def run():
        hub, agents = _hub(tmp_path)
        spec = dict(requirements=["sklearn"], memory="8Mi", minReplicas=1, maxReplicas=2)
        hub.models.apply("m", ModelSpec(storageUri="/m/v1", **spec))
        await _settle(agents)
        v1 = hub.models.models["m"].latest
        v1.scaled, v1.scale_reason = 2, "up: load"  # as the model autoscaler leaves it
        hub.models.apply("m", ModelSpec(storageUri="/m/v2", **spec))
        await _settle(agents)
        v2 = hub.models.models["m"].latest
        assert v2.version == 2 and v2.available_replicas() == [0, 1]
        assert v2.scale_reason == "kept from version 1: up: load"
    asyncio.run(run())
