"""Aggregated discovery for Envoy, incremental (delta xDS v3, `DeltaAggregatedResources`).

The scheduler hands over a Snapshot whenever routing changes; each connected Envoy is sent only
the resources that changed since what it holds, and the names of the ones that went, in a
make-before-break order: clusters first (kept while a live route still needs them), then their
endpoints, then route configurations and routing scopes, and only then are clusters no route
uses removed. A resource's version is a digest of its encoding, so an Envoy that reconnects
(say, after a scheduler restart) and reports the versions it holds is sent nothing it already
has. Bursts of changes coalesce: a stream always pushes the newest snapshot. `wait_applied`
lets a caller wait until every Envoy has acknowledged a snapshot (used before a model is
unloaded from a server)."""

import asyncio
import hashlib
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
# Types Envoy subscribes to as a whole; for the others (endpoints, route configurations) it
# names what it wants, as its clusters and scopes refer to them.
WILDCARD = {er.CLUSTER_TYPE, er.SCOPE_TYPE, er.LISTENER_TYPE}
Resources = dict[str, tuple[str, bytes]]  # name -> (version, encoding)


def _version(encoding: bytes) -> str:
    return hashlib.blake2b(encoding, digest_size=8).hexdigest()


def _resources(messages: dict) -> Resources:
    out = {}
    for name, msg in messages.items():
        b = msg.SerializeToString(deterministic=True)
        out[name] = (_version(b), b)
    return out


class _Stream:
    """One Envoy's ADS stream: what it asked for, holds and acknowledged."""

    def __init__(self, node: str):
        self.node = node
        self.subscribed: dict[str, set[str]] = {}   # type -> names (empty: wildcard types)
        self.held: dict[str, dict[str, str]] = {}  # type -> name -> version Envoy has
        self.acked: dict[str, str] = {}             # type -> newest acknowledged nonce
        self.answered: set[str] = set()  # types sent a response (Envoy waits for a first one)
        self.pushed: dict[str, str] = {}  # type -> nonce of the newest response
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
        self._versions: dict[bytes, str] = {}
        self._encoded: tuple[Snapshot | None, Resources, Resources] = (None, {}, {})
        self.snapshot = Snapshot()
        self.generation = 0
        self._prefix = uuid.uuid4().hex[:8]   # nonces differ across scheduler restarts
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

    async def DeltaAggregatedResources(self, request_iterator, context):
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
                log.error("envoy %s rejected %s (response %s): %s", stream.node, t,
                          req.response_nonce, req.error_detail.message)
            if req.response_nonce:
                stream.acked[t] = req.response_nonce
                stream.acked_event.set()
                if t in (er.ROUTE_TYPE, er.SCOPE_TYPE):  # may complete a snapshot
                    stream.wake.set()
            first = t not in stream.subscribed
            added = set(req.resource_names_subscribe) - {"*"}
            gone = set(req.resource_names_unsubscribe)
            if first or added or gone or req.initial_resource_versions:
                names = stream.subscribed.setdefault(t, set())
                names |= added
                names -= gone
                held = stream.held.setdefault(t, {})
                for n in gone | added:  # a name asked for again is sent again
                    held.pop(n, None)
                held.update(req.initial_resource_versions)
                stream.subs_changed.set()
                stream.wake.set()

    def _scoped(self, snap: Snapshot) -> tuple[Resources, Resources]:
        """(scopes, route configurations), encoded and versioned once per snapshot."""
        if self._encoded[0] is not snap:
            scopes, routes = self.scopes.encode(snap)
            versions = {}  # the same encodings as last time keep their digests
            for b in (*scopes.values(), *routes.values()):
                versions[b] = self._versions.get(b) or _version(b)
            self._versions = versions
            self._encoded = (snap, {n: (versions[b], b) for n, b in scopes.items()},
                             {n: (versions[b], b) for n, b in routes.items()})
        return self._encoded[1], self._encoded[2]

    async def _push(self, stream: _Stream, type_url: str, resources: Resources) -> str | None:
        """Send what changed of one type (and the names that went) unless Envoy holds it all
        already; return the response's nonce."""
        held = stream.held.setdefault(type_url, {})
        if type_url in WILDCARD:
            wanted = resources
        else:
            names = stream.subscribed.get(type_url, set())
            wanted = {n: r for n, r in resources.items() if n in names}
        changed = [(n, v, b) for n, (v, b) in wanted.items() if held.get(n) != v]
        removed = [n for n in held if n not in wanted]
        if not changed and not removed and type_url in stream.answered:
            return None
        stream.answered.add(type_url)
        for n, v, _ in changed:
            held[n] = v
        for n in removed:
            del held[n]
        stream.nonce += 1
        nonce = f"{self._prefix}-{stream.nonce}"
        stream.pushed[type_url] = nonce
        await stream.outbox.put(discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, nonce=nonce, removed_resources=removed,
            resources=[discovery_pb2.Resource(name=n, version=v, resource=any_pb2.Any(
                type_url=type_url, value=b)) for n, v, b in changed]))
        return nonce

    async def _await_ack(self, stream: _Stream, type_url: str, nonce: str | None):
        if nonce is None:
            return
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while stream.acked.get(type_url) != nonce and time.monotonic() < deadline:
            stream.acked_event.clear()
            try:
                await asyncio.wait_for(stream.acked_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                log.warning("envoy %s did not acknowledge %s %s", stream.node, type_url, nonce)

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
                await self._push(stream, er.CLUSTER_TYPE,
                                 _resources(er.clusters(snap, keep, self.limits)))
            # 2. endpoints for the clusters Envoy asks about (it asks right after new clusters)
            if er.ENDPOINT_TYPE in stream.subscribed:
                await self._send_endpoints(stream, snap)
            # 3. the route configurations Envoy holds that changed, then the scopes. A new
            # scope makes Envoy ask for its route configuration; acknowledgements and those
            # requests wake this loop again (waiting here for Envoy, which holds some
            # acknowledgements while it takes in scopes, would stall both sides).
            scopes, routes = self._scoped(snap)
            if er.ROUTE_TYPE in stream.subscribed:
                await self._push(stream, er.ROUTE_TYPE, routes)
            if er.SCOPE_TYPE in stream.subscribed:
                await self._push(stream, er.SCOPE_TYPE, scopes)
            held = stream.held.get(er.ROUTE_TYPE, {})
            complete = er.SCOPE_TYPE in stream.subscribed and all(
                stream.acked.get(t) == stream.pushed.get(t)
                for t in (er.ROUTE_TYPE, er.SCOPE_TYPE) if t in stream.pushed) and all(
                held.get(n) == v for n, (v, _) in routes.items())
            if complete:
                stream.route_backends = snap.referenced_backends() & set(snap.backends)
                # 4. drop clusters no route uses any more
                if keep and er.CLUSTER_TYPE in stream.subscribed:
                    await self._await_ack(stream, er.CLUSTER_TYPE, await self._push(
                        stream, er.CLUSTER_TYPE,
                        _resources(er.clusters(snap, limits=self.limits))))
            if gen != self.generation:
                stream.wake.set()
            elif complete:
                stream.applied = gen
                async with self._applied:
                    self._applied.notify_all()

    async def _send_endpoints(self, stream: _Stream, snap: Snapshot):
        # Envoy subscribes to the endpoints of new clusters after it accepts them; give it a
        # moment, so the endpoints go in this round.
        deadline = time.monotonic() + ACK_TIMEOUT_S
        endpoints = _resources(er.assignments(snap))
        while not set(endpoints) <= stream.subscribed.get(er.ENDPOINT_TYPE, set()):
            stream.subs_changed.clear()
            try:
                await asyncio.wait_for(stream.subs_changed.wait(), deadline - time.monotonic())
            except (TimeoutError, ValueError):
                break
        await self._await_ack(stream, er.ENDPOINT_TYPE,
                              await self._push(stream, er.ENDPOINT_TYPE, endpoints))
