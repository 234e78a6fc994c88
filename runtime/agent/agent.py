"""The agent: follows the scheduler's operations for one replica, loads and unloads models in
its model server, keeps memory within the replica's real capacity by evicting the
least-recently-used model, and reloads evicted models when the proxy asks for them."""

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict

import aiohttp
import grpc

from runtime.agent import modelsettings, triton_layout
from runtime.agent.config import AgentConfig
from runtime.agent.fetch import FetchError, fetch
from runtime.agent.fetch_rules import read_roots
from runtime.agent.metrics import AgentMetrics
from runtime.agent.models import Placed, Placements, State
from runtime.agent.server_client import ServerClient, ServerError
from runtime.pb import agent_pb2, agent_pb2_grpc
from runtime.retry import GaveUp, Retry, retry_async
from runtime.scheduler_auth import SchedulerAuth
from runtime.specs.common import SpecError
from runtime.specs.model import ModelSpec

log = logging.getLogger("core2.agent")
Ev = agent_pb2.ModelEvent
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0


class NotPlaced(Exception):
    """The proxy was asked for a model this replica does not hold."""


class CannotLoad(Exception):
    """A load cannot proceed; the message is the reason reported to the scheduler."""


class Unreachable(Exception):
    """The scheduler (or, while subscribing, the model server) did not answer."""


def _rpc_error(e: grpc.aio.AioRpcError) -> str:
    return f"{e.code().name}: {e.details()}"


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.placements = Placements(config.memory, by_cost=config.eviction == "reload-cost")
        self.server = ServerClient("127.0.0.1", config.server_http_port,
                                   usage=not config.proxied)
        self.metrics = AgentMetrics(config.server_name, config.replica_idx, self.placements)
        self.memory_lock = asyncio.Lock()  # one memory decision + server load/unload at a time
        self.model_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.subscribed = asyncio.Event()
        self.ready = False
        self._channel: grpc.aio.Channel | None = None
        self._stub: agent_pb2_grpc.AgentStub | None = None
        self._tasks: set[asyncio.Task] = set()
        # a fetch in progress per model: set by an unload so a deleted model stops copying
        self.fetch_cancels: dict[str, threading.Event] = {}

    # --- start-up -------------------------------------------------------------------------

    async def wait_for_server(self) -> None:
        """Block until the model server answers ready (the supervisor may start both at once)."""
        started = last_note = time.monotonic()
        while not await self.server.ready():
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.info("still waiting for the model server on port %d (%.0fs)",
                         self.config.server_http_port, last_note - started)
            await asyncio.sleep(0.1)

    async def sync_with_server(self) -> None:
        """Rebuild placements from the repository folder and what the server holds now."""
        records = await asyncio.to_thread(modelsettings.read_records, self.config.repository)
        async with self.memory_lock:  # no load or unload runs while we compare
            held = await self.server.loaded()
            for internal, record in records.items():
                model = self.placements.get(internal)
                if model is None:
                    model = Placed(name=record["name"], version=int(record["version"]),
                                   internal_name=internal, memory=int(record["memory"]))
                    self.placements.add(model)
                if model.state is not State.EVICTING:
                    model.state = State.LOADED if internal in held else State.EVICTED
            self.placements.note_usage(await self.server.usage())

    async def watch_server(self, interval: float = 2.0) -> None:
        """Keep recency fresh, and notice models the server lost (it restarted): those are
        treated as evicted, so their route moves to the agent and the next request reloads."""
        while True:
            await asyncio.sleep(interval)
            self.placements.note_usage(await self.server.usage())
            async with self.memory_lock:  # no load or unload runs while we compare
                try:
                    held = await self.server.loaded()
                except (OSError, aiohttp.ClientError, TimeoutError):
                    continue  # server down or restarting: look again later
                for model in self.placements.in_state(State.LOADED):
                    if model.internal_name in held:
                        continue
                    model.state = State.EVICTING
                    ack = await self.send_event(model, Ev.EVICTING, "model server lost it")
                    model.state = State.EVICTED if ack and ack.routes_applied else State.LOADED
                    log.warning("model server no longer holds the model",
                                extra={"model": model.internal_name})

    # --- scheduler connection -------------------------------------------------------------

    def subscribe_message(self) -> agent_pb2.AgentSubscribe:
        c = self.config
        # A proxied server is reached through the agent: Envoy gets the proxy's ports for it.
        http, grpc_port = ((c.http_port, c.grpc_port) if c.proxied
                           else (c.server_http_port, c.server_grpc_port))
        return agent_pb2.AgentSubscribe(
            server_name=c.server_name, replica_idx=c.replica_idx, capabilities=c.capabilities,
            memory_bytes=c.memory, over_commit_percentage=c.over_commit, host=c.host,
            server_http_port=http, server_grpc_port=grpc_port,
            agent_http_port=c.http_port, agent_grpc_port=c.grpc_port,
            loaded=[m.ref() for m in self.placements.models.values() if m.in_server],
            evicted=[m.ref() for m in self.placements.in_state(State.EVICTED)],
        )

    async def follow_scheduler(self) -> None:
        """Subscribe, run operations as they arrive; on any loss re-subscribe with backoff.
        Models stay loaded meanwhile: Envoy keeps serving them."""
        self._channel = SchedulerAuth.from_env().aio_channel(self.config.scheduler)
        stub = self._stub = agent_pb2_grpc.AgentStub(self._channel)

        async def subscribe() -> grpc.aio.UnaryStreamCall:
            try:
                await self.sync_with_server()
                call = stub.Subscribe(self.subscribe_message())
                await call.wait_for_connection()
                return call
            except grpc.aio.AioRpcError as e:
                raise Unreachable(f"scheduler unreachable ({_rpc_error(e)})") from None
            except (ServerError, OSError, aiohttp.ClientError) as e:
                raise Unreachable(f"cannot read the model server's state ({e})") from None

        while True:  # each pass: a fresh back-off, as after a subscription that worked
            call = await retry_async(subscribe, Retry(
                what=f"subscription to scheduler {self.config.scheduler}",
                retry_on=(Unreachable,), first=BACKOFF_MIN, cap=BACKOFF_MAX, quiet_tries=0))
            log.info("subscribed to scheduler %s", self.config.scheduler)
            self.subscribed.set()
            try:
                async for op in call:
                    self.spawn(self.run_operation(op))
                log.warning("scheduler closed the subscription")
            except grpc.aio.AioRpcError as e:
                log.warning("subscription to the scheduler lost (%s)", _rpc_error(e))
            self.subscribed.clear()
            await asyncio.sleep(BACKOFF_MIN)

    async def send_event(self, model: Placed, event: Ev.Event, reason: str = "",
                         attempts: int = 3) -> agent_pb2.EventAck | None:
        """Tell the scheduler; None when it could not be told after `attempts` tries."""
        msg = agent_pb2.ModelEvent(
            server_name=self.config.server_name, replica_idx=self.config.replica_idx,
            model=model.ref(), event=event, reason=reason,
            available_memory_bytes=self.placements.available())

        async def deliver() -> agent_pb2.EventAck:
            try:
                return await self._scheduler().Event(msg, timeout=60)
            except grpc.aio.AioRpcError as e:
                raise Unreachable(_rpc_error(e)) from None

        try:
            return await retry_async(deliver, Retry(
                what=f"event {Ev.Event.Name(event)} for {model.internal_name}",
                retry_on=(Unreachable,), attempts=attempts, first=BACKOFF_MIN,
                cap=BACKOFF_MAX, quiet_tries=0))
        except GaveUp as e:
            log.warning("%s", e)
            return None

    async def send_load(self, report: agent_pb2.LoadReport) -> None:
        await self._scheduler().ReportLoad(report, timeout=5)

    def _scheduler(self) -> agent_pb2_grpc.AgentStub:
        if self._stub is None:
            raise Unreachable("not connected to the scheduler yet")
        return self._stub

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- operations -----------------------------------------------------------------------

    async def run_operation(self, op: agent_pb2.ModelOperation) -> None:
        try:
            if op.op == agent_pb2.ModelOperation.LOAD:
                await self.load(op)
            elif op.op == agent_pb2.ModelOperation.UNLOAD:
                await self.unload(op.model)
        except Exception:  # an operation must never take the agent down
            log.exception("operation %s on %s failed", op.op, op.model.internal_name)

    async def load(self, op: agent_pb2.ModelOperation) -> None:
        ref = op.model
        async with self.model_locks[ref.internal_name]:
            model = self.placements.get(ref.internal_name)
            if model is not None:  # placed before (e.g. a scheduler restart re-sends LOAD)
                try:
                    await self.make_resident(model)
                except (CannotLoad, ServerError) as e:
                    await self.send_event(model, Ev.LOAD_FAILED, str(e))
                    return
                await self.send_event(model, Ev.LOADED)
                return
            model = Placed(name=ref.name, version=ref.version, internal_name=ref.internal_name,
                           memory=op.memory_bytes)
            await self.send_event(model, Ev.LOADING)
            try:
                await self.prepare(model, op.spec_json)
                self.placements.add(model)
                await self.make_resident(model)
            except (CannotLoad, SpecError, FetchError, modelsettings.SettingsError,
                    ServerError) as e:
                async with self.memory_lock:
                    self.placements.remove(model.internal_name)
                modelsettings.remove_model(self.config.repository, model.internal_name)
                log.warning("load failed: %s", e, extra={"model": model.internal_name})
                await self.send_event(model, Ev.LOAD_FAILED, str(e))
                return
            await self.send_event(model, Ev.LOADED)

    async def prepare(self, model: Placed, spec_json: str) -> None:
        """Fetch the artifact and write the model's folder into the server's repository."""
        try:
            spec = ModelSpec.parse(json.loads(spec_json or "{}"), where="spec")
        except ValueError as e:
            raise CannotLoad(f"spec: {e}") from None
        if not model.memory:
            model.memory = spec.memory_bytes
        rules = self.config.fetch_rules
        roots = [*(rules.localRoots or []), *read_roots(self.config.local_roots_file)]
        cancel = self.fetch_cancels[model.internal_name] = threading.Event()
        try:
            artifact = await asyncio.to_thread(fetch, spec.storageUri, self.config.cache_dir,
                                               spec.artifactVersion, rules, roots, cancel)
        finally:
            self.fetch_cancels.pop(model.internal_name, None)
        if self.config.server_kind == "triton":
            await asyncio.to_thread(triton_layout.write_model, self.config.repository,
                                    model.internal_name, model.version, artifact,
                                    model.record())
        else:
            await asyncio.to_thread(modelsettings.write_model, self.config.repository,
                                    model.internal_name, spec, artifact, model.record())

    async def make_resident(self, model: Placed) -> None:
        """Load `model` into the server, evicting least-recently-used models to make room."""
        async with self.memory_lock:
            if model.in_server:
                return
            if model.memory > self.placements.capacity:
                raise CannotLoad(f"memory: the model needs {model.memory} bytes, more than the "
                                 f"replica's {self.placements.capacity}")
            if self.placements.available() < model.memory:
                self.placements.note_usage(await self.server.usage())
            evicting = time.monotonic()
            while self.placements.available() < model.memory:
                victim = self.placements.victim(keep=model.internal_name)
                if victim is None:
                    raise CannotLoad(f"memory: the model needs {model.memory} bytes and only "
                                     f"{self.placements.available()} are free")
                await self.evict(victim)
            started = time.monotonic()
            await self.server.load(model.internal_name)
            loaded = time.monotonic()
            model.loaded_in(loaded - started)  # its reload cost, for the victim choice
            log.info("loaded", extra={"model": model.internal_name,
                                      "seconds": round(loaded - started, 3),
                                      "making_room_seconds": round(started - evicting, 3)})
            self.metrics.loads += 1
            model.state = State.LOADED
            model.last_used = time.time()

    async def evict(self, victim: Placed) -> None:
        """Move the victim's route to the agent (scheduler + Envoy confirm), then unload it.
        Called with the memory lock held."""
        victim.state = State.EVICTING
        ack = await self.send_event(victim, Ev.EVICTING, "over-commit: least recently used")
        if ack is None or not ack.routes_applied:
            victim.state = State.LOADED
            raise CannotLoad(f"memory: cannot evict {victim.name}: the scheduler did not "
                             "confirm its route moved to the agent")
        try:
            await self.server.unload(victim.internal_name)
        except ServerError:
            victim.state = State.LOADED
            raise
        victim.state = State.EVICTED
        self.metrics.evictions += 1
        self.metrics.unloads += 1
        log.info("evicted", extra={"model": victim.internal_name,
                                   "idle_seconds": round(time.time() - victim.last_used, 1),
                                   "reload_seconds": round(victim.load_seconds or 0.0, 3)})

    async def unload(self, ref: agent_pb2.ModelRef) -> None:
        if cancel := self.fetch_cancels.get(ref.internal_name):
            cancel.set()  # the load holds the model's lock while it fetches: stop it first
        async with self.model_locks[ref.internal_name]:
            model = self.placements.get(ref.internal_name) or Placed(
                name=ref.name, version=ref.version, internal_name=ref.internal_name, memory=0)
            await self.send_event(model, Ev.UNLOADING)
            async with self.memory_lock:
                if model.in_server:
                    try:
                        await self.server.unload(model.internal_name)
                        self.metrics.unloads += 1
                    except ServerError as e:
                        if e.status != 404:  # already gone from the server is fine
                            await self.send_event(model, Ev.UNLOAD_FAILED, str(e))
                            return
                self.placements.remove(model.internal_name)
                model.state = State.EVICTED
            await asyncio.to_thread(modelsettings.remove_model, self.config.repository,
                                    model.internal_name)
            await self.send_event(model, Ev.UNLOADED)

    # --- reload on demand (the proxy) -----------------------------------------------------

    async def ensure_resident(self, internal_name: str) -> None:
        """Make sure an evicted model is back in the server; concurrent callers share one
        reload (they queue on the model's lock and then find it loaded)."""
        model = self.placements.get(internal_name)
        if model is None:
            raise NotPlaced(internal_name)
        if model.state is State.LOADED:
            return
        async with self.model_locks[internal_name]:
            if self.placements.get(internal_name) is not model:
                raise NotPlaced(internal_name)
            if model.state is State.LOADED:
                return
            await self.make_resident(model)
            self.metrics.cache_misses += 1
            log.info("reloaded on demand", extra={"model": internal_name})
        self.spawn(self.send_event(model, Ev.RESIDENT))
