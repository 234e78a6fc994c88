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
from collections.abc import Mapping

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.scheduler import envoy_resources as er
from runtime.scheduler.routes import ChangeLog, Snapshot

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


class Versioned(Mapping):
    """Resources of one type (name -> (version, encoding)) kept between snapshots, with a log
    of which names changed when: a stream that pushed generation g checks only the names
    changed since, not every resource."""

    def __init__(self):
        self._items: Resources = {}
        self.generation = 0
        self.log = ChangeLog()

    def __getitem__(self, name: str) -> tuple[str, bytes]:
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, changes: dict[str, bytes | None]) -> None:
        """Set the changed encodings (None: the resource went)."""
        if not changes:
            return
        self.generation += 1
        for name, b in changes.items():
            if b is None:
                self._items.pop(name, None)
            else:
                self._items[name] = (_version(b), b)
        self.log.add(self.generation, changes)

    def changed_since(self, generation: int) -> set[str] | None:
        return self.log.since(generation, self.generation)


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
        # per type, for Versioned resources: the generation last pushed, names to look at
        # again (subscriptions changed), whether to compare everything next time, and the
        # resources Envoy does not hold at their newest version
        self.synced: dict[str, int] = {}
        self.recheck: dict[str, set[str]] = {}
        self.compare_all: set[str] = set()
        self.lacking: dict[str, set[str]] = {}
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.acked_event = asyncio.Event()


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, limits: InferenceLimits = DEFAULT_LIMITS):
        self.limits = limits
        self.scopes = er.ScopeTable()
        self._scope_res, self._route_res = Versioned(), Versioned()
        self._encoded: Snapshot | None = None
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
                done, _ = await asyncio.wait({get, reader, writer},
                                             return_when=asyncio.FIRST_COMPLETED)
                if writer in done:  # it loops for good: only a bug ends it
                    # say so (Envoy would silently get no routes), and end the stream so
                    # Envoy connects again and gets a fresh start
                    log.error("envoy %s: sending resources failed", stream.node,
                              exc_info=None if writer.cancelled() else writer.exception())
                if get not in done or writer in done:
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
                recheck = stream.recheck.setdefault(t, set())
                for n in gone | added:  # a name asked for again is sent again
                    held.pop(n, None)
                    recheck.add(n)
                if req.initial_resource_versions:
                    held.update(req.initial_resource_versions)
                    stream.compare_all.add(t)
                stream.subs_changed.set()
                stream.wake.set()

    def _scoped(self, snap: Snapshot) -> tuple[Versioned, Versioned]:
        """(scopes, route configurations), brought up to `snap` (never back to an older
        snapshot: a stream that took an older one pushes the newer routes)."""
        seen = self._encoded
        if seen is None or (snap is not seen and not (
                snap.log is not None and snap.log is seen.log
                and snap.generation < seen.generation)):
            scopes, routes = self.scopes.update(snap)
            self._scope_res.apply(scopes)
            self._route_res.apply(routes)
            self._encoded = snap
        return self._scope_res, self._route_res

    async def _push(self, stream: _Stream, type_url: str, resources: Mapping) -> str | None:
        """Send what changed of one type (and the names that went) unless Envoy holds it all
        already; return the response's nonce."""
        held = stream.held.setdefault(type_url, {})
        wildcard = type_url in WILDCARD
        subscribed = stream.subscribed.get(type_url, set())
        names = self._to_check(stream, type_url, resources)
        changed, removed = [], []
        for n in (set(resources) | set(held)) if names is None else names:
            r = resources.get(n) if wildcard or n in subscribed else None
            if r is None:
                if n in held:
                    removed.append(n)
            elif held.get(n) != r[0]:
                changed.append((n, *r))
        self._note_lacking(stream, type_url, resources, names, changed)
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

    @staticmethod
    def _to_check(stream: _Stream, type_url: str, resources: Mapping) -> set[str] | None:
        """The names that may differ from what Envoy holds: those changed since the last
        push and those whose subscription changed; None to compare everything (a plain dict,
        a first push, Envoy reported what it holds, or the log no longer reaches back)."""
        recheck = stream.recheck.pop(type_url, set())
        if not isinstance(resources, Versioned):
            return None
        since = stream.synced.get(type_url)
        stream.synced[type_url] = resources.generation
        if since is None or type_url not in stream.answered or type_url in stream.compare_all:
            stream.compare_all.discard(type_url)
            return None
        names = resources.changed_since(since)
        return None if names is None else names | recheck

    @staticmethod
    def _note_lacking(stream: _Stream, type_url: str, resources: Mapping,
                      names: set[str] | None, changed: list) -> None:
        """Keep the set of resources Envoy does not hold at their newest version (after this
        push sends `changed`)."""
        held, sent = stream.held.get(type_url, {}), {n for n, *_ in changed}
        if names is None:
            names = set(resources)
            lacking = stream.lacking[type_url] = set()
        else:
            lacking = stream.lacking.setdefault(type_url, set(resources))
        for n in names:
            r = resources.get(n)
            if r is None or n in sent or held.get(n) == r[0]:
                lacking.discard(n)
            else:
                lacking.add(n)

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
            if gen != self.generation:  # changed meanwhile: routes go as they are now,
                newer = self.snapshot       # unless clusters or endpoints changed too
                if newer.backends != snap.backends:
                    stream.wake.set()
                    continue
                gen, snap = self.generation, newer
            # 3. the route configurations Envoy holds that changed, then the scopes. A new
            # scope makes Envoy ask for its route configuration; acknowledgements and those
            # requests wake this loop again (waiting here for Envoy, which holds some
            # acknowledgements while it takes in scopes, would stall both sides).
            scopes, routes = self._scoped(snap)
            if er.ROUTE_TYPE in stream.subscribed:
                await self._push(stream, er.ROUTE_TYPE, routes)
            if er.SCOPE_TYPE in stream.subscribed:
                await self._push(stream, er.SCOPE_TYPE, scopes)
            lacking = stream.lacking.get(er.ROUTE_TYPE, routes)  # not pushed yet: all of them
            complete = er.SCOPE_TYPE in stream.subscribed and all(
                stream.acked.get(t) == stream.pushed.get(t)
                for t in (er.ROUTE_TYPE, er.SCOPE_TYPE) if t in stream.pushed) and not lacking
            if complete:
                stream.route_backends = set(snap.backends)
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
