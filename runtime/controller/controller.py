"""The controller's loops: a list+watch per kind and namespace fills a cache of custom
resources, one scheduler status stream per kind brings status changes, and workers reconcile
each changed key (reconcile.py). Threads, because the `kubernetes` client and the scheduler's
gRPC stubs block; the work queue keeps one key on one worker at a time."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.client import SchedulerClient, SchedulerError
from runtime.controller.kube import KINDS, Gone, Kube
from runtime.controller.reconcile import Key, Reconciler
from runtime.controller.workqueue import WorkQueue
from runtime.pb import scheduler_pb2 as pb
from runtime.retry import GaveUp, Retry, retry

log = logging.getLogger(__name__)
BACKOFF_S = (0.2, 2.0)  # reconnect delays: first, longest


@dataclass
class Progress:
    """What /readyz and the bench read: whether every list has been read, and when."""

    lists: set[tuple[str, str]] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)
    synced_at: float | None = None
    drained_at: float | None = None   # every listed CR reconciled once
    stream_up: dict[str, bool] = field(default_factory=dict)


class Controller:
    def __init__(self, kube: Kube, scheduler: SchedulerClient, reconciler: Reconciler,
                 namespaces: list[str], workers: int = 4):
        self.kube, self.scheduler, self.rec = kube, scheduler, reconciler
        self.namespaces = namespaces or [""]  # "" = every namespace
        self.workers = workers
        self.queue: WorkQueue[Key] = WorkQueue()
        self.cache: dict[Key, dict] = {}
        self.by_name: dict[tuple[str, str], set[str]] = {}  # (kind, name) -> namespaces
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.progress = Progress()

    # ---- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Run until stop is set (by a signal handler, or leadership lost)."""
        self.progress.started_at = time.monotonic()
        threads = [self._thread(f"watch-{k}-{ns or 'all'}", self._informer, k, ns)
                   for k in KINDS for ns in self.namespaces]
        threads += [self._thread(f"status-{k}", self._status_stream, k) for k in KINDS]
        threads += [self._thread(f"worker-{i}", self._worker) for i in range(self.workers)]
        self.stop.wait()
        self.queue.close()
        self.scheduler.cancel_streams()

    def _thread(self, name: str, target: Callable, *args) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        return t

    @property
    def synced(self) -> bool:
        return self.progress.synced_at is not None

    # ---- the cache -------------------------------------------------------------------------
    def _put(self, obj: dict) -> Key:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        with self.lock:
            self.cache[key] = obj
            self.by_name.setdefault((key[0], key[2]), set()).add(key[1])
        return key

    def _drop(self, key: Key) -> None:
        with self.lock:
            self.cache.pop(key, None)
            names = self.by_name.get((key[0], key[2]), set())
            names.discard(key[1])

    def owner(self, kind: str, name: str) -> str | None:
        """The namespace whose CR of this name the scheduler serves: the oldest one."""
        with self.lock:
            found = [(self.cache[(kind, ns, name)]["metadata"].get("creationTimestamp", ""), ns)
                     for ns in self.by_name.get((kind, name), ())]
        return min(found)[1] if found else None

    def _requeue_name(self, key: Key) -> None:
        with self.lock:
            namespaces = list(self.by_name.get((key[0], key[2]), ()))
        for ns in namespaces:
            self.queue.add((key[0], ns, key[2]))

    def resync(self) -> None:
        with self.lock:
            keys = list(self.cache)
        for key in keys:
            self.queue.add(key)

    # ---- Kubernetes: list, then watch ------------------------------------------------------
    def _informer(self, kind: str, namespace: str) -> None:
        """List, then watch; list again when the watch's version is too old (at once) or
        the API server is away (after a back-off)."""
        while not self.stop.is_set():
            try:
                retry(lambda: self._list_and_watch(kind, namespace),
                      Retry(what=f"list+watch {kind} in {namespace or 'every namespace'}",
                            first=BACKOFF_S[0], cap=BACKOFF_S[1], stop=self.stop.is_set,
                            quiet_tries=0))
            except GaveUp:
                return

    def _list_and_watch(self, kind: str, namespace: str) -> None:
        """Returns when stopped or when the watch is Gone (to list again)."""
        items, version = self.kube.objects(kind, namespace)
        listed = set()
        for obj in items:
            obj.setdefault("kind", kind)
            key = self._put(obj)
            listed.add(key)
            self.queue.add(key)
        with self.lock:  # objects deleted while we were not watching
            stale = [k for k in self.cache if k[0] == kind and
                     (not namespace or k[1] == namespace) and k not in listed]
        for key in stale:
            self._drop(key)
        self._listed(kind, namespace)
        try:
            while not self.stop.is_set():
                for event, obj in self.kube.watch(kind, namespace, version, self.stop.is_set):
                    version = obj["metadata"].get("resourceVersion", version)
                    if event == "BOOKMARK":
                        continue
                    obj.setdefault("kind", kind)
                    key = self._key(obj)
                    if event == "DELETED":
                        self._drop(key)
                        self._requeue_name(key)  # another namespace's CR may own it now
                    else:
                        self._put(obj)
                        self.queue.add(key)
        except Gone:
            return

    @staticmethod
    def _key(obj: dict) -> Key:
        meta = obj["metadata"]
        return obj["kind"], meta["namespace"], meta["name"]

    def _listed(self, kind: str, namespace: str) -> None:
        self.progress.lists.add((kind, namespace))
        if self.progress.synced_at is None and \
                len(self.progress.lists) == len(KINDS) * len(self.namespaces):
            self.progress.synced_at = time.monotonic()
            log.info("listed every kind in %s", ", ".join(self.namespaces))
            if not len(self.queue):  # nothing to reconcile
                self._drained()

    # ---- the scheduler's status stream -----------------------------------------------------
    def _status_stream(self, kind: str) -> None:
        connected_before = False

        def connected() -> None:
            nonlocal connected_before
            self.progress.stream_up[kind] = True
            if connected_before:  # the scheduler restarted: diff every CR again
                log.info("scheduler status stream (%s) back: resync", kind)
                self.rec.forget_applied()
                self.resync()
            connected_before = True

        def status(item: pb.ResourceStatus) -> None:
            self.rec.remember(kind, item)
            self._requeue_name((kind, "", item.name))
            if kind == "Model":  # a refused pipeline or experiment may lack it
                for key in self.rec.waiting():
                    self.queue.add(key)

        def lost(e: SchedulerError) -> None:
            self.progress.stream_up[kind] = False
            log.warning("scheduler status stream (%s) lost: %s", kind, e)

        self.scheduler.follow(kind, status, self.stop, connected, lost, cap=BACKOFF_S[1])

    # ---- workers ---------------------------------------------------------------------------
    def _worker(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                with self.lock:
                    obj = self.cache.get(key)
                outcome = self.rec.reconcile(key, obj, self.owner(key[0], key[2]))
                if outcome.retry is not None:
                    self.queue.add_after(key, outcome.retry)
            except Exception as e:  # a conflict (409), the API server away: look again soon
                code = getattr(e, "status", None)
                if code == 404:  # gone meanwhile (a stale look after the finalizer went)
                    continue
                level = logging.DEBUG if code == 409 else logging.WARNING
                log.log(level, "reconcile %s %s/%s: %s", *key,
                        f"{code} {getattr(e, 'reason', '')}" if code else e)
                self.queue.add_after(key, 1.0)
            finally:
                self.queue.done(key)
                if self.progress.drained_at is None and self.synced and not len(self.queue):
                    self._drained()

    def _drained(self) -> None:
        p = self.progress
        p.drained_at = time.monotonic()
        with self.lock:
            count = len(self.cache)
        log.info("resync of %d CRs done %.2fs after leading (lists read in %.2fs)", count,
                 p.drained_at - p.started_at, (p.synced_at or p.drained_at) - p.started_at)
