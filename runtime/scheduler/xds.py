"""Aggregated discovery (ADS, xDS v3, state of the world) for Envoy.

The scheduler hands over a Snapshot whenever routing changes; each connected Envoy gets it in a
make-before-break order: clusters first (kept while a live route still needs them), then their
endpoints, then the routes, and only then are clusters no route uses removed. Bursts of changes
coalesce: a stream always pushes the newest snapshot. `wait_applied` lets a caller wait until
every Envoy has acknowledged a snapshot (used before a model is unloaded from a server)."""

import asyncio
import logging
import time
import uuid

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.scheduler import envoy_resources as er
from runtime.scheduler.routes import Snapshot

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 5.0


def _encoded(resources) -> list[bytes]:
    return [r.SerializeToString(deterministic=True) for r in resources]


class _Stream:
    """One Envoy's ADS stream: what it asked for, what it acknowledged, what we sent."""

    def __init__(self, node: str):
        self.node = node
        self.subscribed: dict[str, set[str]] = {}
        self.acked: dict[str, str] = {}      # type_url -> acknowledged version
        self.sent: dict[str, tuple[str, bytes]] = {}  # type_url -> (version, content hash)
        self.routes_sent: dict[str, bytes] = {}  # route configuration name -> content
        self.nonce = 0
        self.applied = 0                      # newest snapshot generation fully acknowledged
        self.wake = asyncio.Event()            # a new snapshot or subscription to answer
        self.subs_changed = asyncio.Event()
        self.route_backends: set[str] = set()  # backends the routes Envoy holds point at
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.acked_event = asyncio.Event()


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, limits: InferenceLimits = DEFAULT_LIMITS):
        self.limits = limits
        self.scopes = er.ScopeTable()
        self._encoded: tuple[Snapshot | None, dict, dict] = (None, {}, {})
        self.snapshot = Snapshot()
        self.generation = 0
        self._prefix = uuid.uuid4().hex[:8]   # versions differ across scheduler restarts
        self._streams: set[_Stream] = set()
        self._applied = asyncio.Condition()

    def set_snapshot(self, snapshot: Snapshot) -> int:
        self.snapshot = snapshot
        self.generation += 1
        for s in self._streams:
            s.wake.set()
        return self.generation

    @property
    def connected(self) -> int:
        return len(self._streams)

    async def wait_applied(self, generation: int, timeout: float = ACK_TIMEOUT_S) -> bool:
        """True once at least one Envoy is connected and every connected Envoy acknowledged
        `generation` (or a newer one); False after `timeout`."""
        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(
                    lambda: self._streams and all(s.applied >= generation
                                                  for s in self._streams)), timeout)
                return True
            except TimeoutError:
                return False

    async def StreamAggregatedResources(self, request_iterator, context):
        stream = _Stream(node="?")
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(stream, request_iterator))
        writer = asyncio.create_task(self._write(stream))
        try:
            while True:
                get = asyncio.create_task(stream.outbox.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                yield get.result()
        finally:
            reader.cancel()
            writer.cancel()
            self._streams.discard(stream)
            async with self._applied:
                self._applied.notify_all()
            log.info("envoy %s disconnected", stream.node)

    async def _read(self, stream: _Stream, requests):
        async for req in requests:
            if req.node.id:
                stream.node = req.node.id
            t = req.type_url
            if req.error_detail.message:
                log.error("envoy %s rejected %s version %s: %s", stream.node, t,
                          req.version_info, req.error_detail.message)
            elif req.response_nonce:
                stream.acked[t] = req.version_info
                stream.acked_event.set()
            names = set(req.resource_names)
            if stream.subscribed.get(t) != names or not req.response_nonce:
                stream.subscribed[t] = names
                # A new subscription (or changed names) needs an answer even if unchanged.
                stream.sent.pop(t, None)
                if t == er.ROUTE_TYPE:  # a name dropped and asked for again is sent again
                    stream.routes_sent = {n: b for n, b in stream.routes_sent.items()
                                          if n in names and req.response_nonce}
                stream.subs_changed.set()
                stream.wake.set()

    def _scoped(self, snap: Snapshot) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(scopes, route configurations), encoded once per snapshot for every Envoy."""
        if self._encoded[0] is not snap:
            self._encoded = (snap, *self.scopes.encode(snap))
        return self._encoded[1], self._encoded[2]

    async def _send_routes(self, stream: _Stream, routes: dict[str, bytes]) -> str | None:
        """Route configurations are not state of the world: send only the ones Envoy asked for
        (its scopes name them) whose content it does not have yet."""
        names = stream.subscribed.get(er.ROUTE_TYPE, set())
        changed = [(n, b) for n, b in routes.items()
                   if n in names and stream.routes_sent.get(n) != b]
        if not changed:
            return None
        stream.nonce += 1
        version = f"{self._prefix}-{self.generation}-{stream.nonce}"
        stream.routes_sent.update(changed)
        await stream.outbox.put(discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=er.ROUTE_TYPE, nonce=str(stream.nonce),
            resources=[any_pb2.Any(type_url=er.ROUTE_TYPE, value=b) for _, b in changed]))
        return version

    async def _send(self, stream: _Stream, type_url: str, payloads: list[bytes]) -> str | None:
        """Send encoded resources of one type unless identical to what was sent; return the
        version."""
        content = b"".join(sorted(payloads))
        sent = stream.sent.get(type_url)
        if sent and sent[1] == content:
            return None
        stream.nonce += 1
        version = f"{self._prefix}-{self.generation}-{stream.nonce}"
        stream.sent[type_url] = (version, content)
        await stream.outbox.put(discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=type_url, nonce=str(stream.nonce),
            resources=[any_pb2.Any(type_url=type_url, value=p) for p in payloads]))
        return version

    async def _await_ack(self, stream: _Stream, type_url: str, version: str | None):
        if version is None:
            return
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while stream.acked.get(type_url) != version and time.monotonic() < deadline:
            stream.acked_event.clear()
            try:
                await asyncio.wait_for(stream.acked_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                log.warning("envoy %s did not acknowledge %s %s", stream.node, type_url, version)

    async def _write(self, stream: _Stream):
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            await asyncio.sleep(0.005)  # let a burst of changes coalesce
            gen, snap = self.generation, self.snapshot
            # 1. clusters: the new ones, and the ones the routes Envoy holds still use
            keep = stream.route_backends - set(snap.backends)
            # (not waiting for the ACK: Envoy asks for the new clusters' endpoints first)
            if er.CLUSTER_TYPE in stream.subscribed:
                await self._send(stream, er.CLUSTER_TYPE,
                                 _encoded(er.clusters(snap, keep, self.limits).values()))
            # 2. endpoints for the clusters Envoy asks about (it asks right after new clusters)
            if er.ENDPOINT_TYPE in stream.subscribed:
                await self._send_endpoints(stream, snap)
            # 3. the route configurations Envoy holds that changed, then the scopes (a new
            # scope makes Envoy ask for its route configuration: the next round sends it)
            scopes, routes = self._scoped(snap)
            if er.ROUTE_TYPE in stream.subscribed:
                await self._await_ack(stream, er.ROUTE_TYPE,
                                      await self._send_routes(stream, routes))
            if er.SCOPE_TYPE in stream.subscribed:
                await self._await_ack(stream, er.SCOPE_TYPE, await self._send(
                    stream, er.SCOPE_TYPE, list(scopes.values())))
            complete = er.SCOPE_TYPE in stream.subscribed and all(
                stream.routes_sent.get(n) == b for n, b in routes.items())
            if complete:
                stream.route_backends = snap.referenced_backends() & set(snap.backends)
                # 4. drop clusters no route uses any more
                if keep and er.CLUSTER_TYPE in stream.subscribed:
                    await self._await_ack(stream, er.CLUSTER_TYPE, await self._send(
                        stream, er.CLUSTER_TYPE,
                        _encoded(er.clusters(snap, limits=self.limits).values())))
            if er.LISTENER_TYPE in stream.subscribed and er.LISTENER_TYPE not in stream.sent:
                await self._send(stream, er.LISTENER_TYPE, [])
            if gen != self.generation:
                stream.wake.set()
            elif complete:
                stream.applied = gen
                async with self._applied:
                    self._applied.notify_all()

    async def _send_endpoints(self, stream: _Stream, snap: Snapshot):
        # Envoy re-subscribes to EDS for new clusters after it accepts CDS; give it a moment.
        deadline = time.monotonic() + ACK_TIMEOUT_S
        all_eps = er.assignments(snap)
        wanted = set(all_eps)
        while not wanted <= stream.subscribed.get(er.ENDPOINT_TYPE, set()):
            stream.subs_changed.clear()
            try:
                await asyncio.wait_for(stream.subs_changed.wait(), deadline - time.monotonic())
            except (TimeoutError, ValueError):
                break
        names = stream.subscribed.get(er.ENDPOINT_TYPE, set())
        resources = [a for n, a in all_eps.items() if not names or n in names]
        await self._await_ack(stream, er.ENDPOINT_TYPE,
                              await self._send(stream, er.ENDPOINT_TYPE, _encoded(resources)))
