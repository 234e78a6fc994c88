"""One custom resource brought in line with the scheduler: its spec applied, its deletion held
by a finalizer until the scheduler has let it go, its status written.

The decision is a diff, not a replay: a spec is applied only when the scheduler holds a
different one (or none), so a resync after any restart reloads nothing.
"""

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from runtime.client import SchedulerClient, SchedulerError
from runtime.controller import status
from runtime.controller.kube import FINALIZER
from runtime.kinds import GONE, TERMINATING
from runtime.pb import scheduler_pb2 as pb
from runtime.specs import SpecError
from runtime.specs.manifest import KINDS

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name)
LEAVING = GONE | TERMINATING


@dataclass
class Outcome:
    """What the worker does next with the key: nothing, or look again after `retry` seconds."""

    retry: float | None = None


def desired(kind: str, spec: dict, storage_base: Path | None) -> dict:
    """The spec as the scheduler stores it (defaults dropped the same way), a relative plain
    storageUri taken from `storage_base` (local mode: kubectl keeps no manifest folder)."""
    parsed = KINDS[kind].parse(spec, f"{kind}: spec")
    uri = getattr(parsed, "storageUri", None)
    if storage_base and uri and "://" not in uri and not Path(uri).is_absolute():
        parsed.storageUri = str((storage_base / uri).resolve())
    return json.loads(parsed.model_dump_json(exclude_none=True))


class Reconciler:
    def __init__(self, kube, scheduler: SchedulerClient, storage_base: Path | None = None,
                 servers=None):
        self.kube, self.scheduler = kube, scheduler
        self.storage_base, self.servers = storage_base, servers
        self.lock = threading.Lock()
        self.statuses: dict[tuple[str, str], pb.ResourceStatus] = {}
        self.applied: dict[Key, str] = {}           # spec the scheduler is known to hold
        self.observed: dict[Key, int] = {}          # generation it was applied from
        self.refused: dict[Key, tuple[str, str]] = {}  # spec -> the scheduler's reason
        self.failures: dict[Key, int] = {}

    # ---- scheduler status, from the stream or a call ---------------------------------------
    def remember(self, kind: str, s: pb.ResourceStatus) -> None:
        with self.lock:
            old = self.statuses.get((kind, s.name))
            if old is None or s.updated_unix_ms >= old.updated_unix_ms or not s.updated_unix_ms:
                self.statuses[(kind, s.name)] = s

    def waiting(self) -> list[Key]:
        """Refused Pipelines and Experiments: a model appearing may make them valid."""
        return [k for k in list(self.refused) if k[0] in ("Pipeline", "Experiment")]

    def forget_applied(self) -> None:
        """The scheduler restarted: check each spec against it again (applying only a diff)."""
        with self.lock:
            self.applied.clear()

    # ---- the reconcile step ----------------------------------------------------------------
    def reconcile(self, key: Key, obj: dict | None, owner: str | None) -> Outcome:
        """`owner`: the namespace whose CR holds this kind and name at the scheduler (one
        scheduler serves every watched namespace, so the oldest CR of a name wins)."""
        if obj is None:
            return Outcome()
        kind, ns, name = key
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return self._delete(key, obj, owner == ns)
        if FINALIZER not in (meta.get("finalizers") or []):
            obj = self.kube.set_finalizers(obj, [*(meta.get("finalizers") or []), FINALIZER])
            meta = obj["metadata"]  # go on with what the API server stored (no watch wait)
        if owner != ns:
            return self._write(key, obj, refused=f"metadata.name: {kind} {name!r} is already "
                               f"served from namespace {owner!r} (names are per scheduler)")
        try:
            want = desired(kind, obj.get("spec") or {}, self.storage_base)
        except SpecError as e:  # the CRD schema let through what the spec rules refuse
            return self._refuse(key, obj, "", str(e))
        fingerprint = json.dumps(want, sort_keys=True)
        if self.applied.get(key) != fingerprint:
            refused = self.refused.get(key)
            try:
                self._apply(key, want, fingerprint)
            except SchedulerError as e:
                if not e.invalid:
                    log.warning("%s %s/%s: %s", kind, ns, name, e)
                    return self._retry(key, obj)
                if refused is None or refused[1] != str(e):
                    log.info("%s %s/%s refused: %s", kind, ns, name, e)
                return self._refuse(key, obj, fingerprint, str(e))
            self.observed[key] = meta.get("generation", 0)
        extra = []
        if kind == "Server" and self.servers is not None:
            ok, message = self.servers.scale(ns, name, want,
                                             self.statuses.get(("Server", name)))
            extra.append(("ReplicasScaled", ok, "" if ok else "NoStatefulSet", message))
        self.failures.pop(key, None)
        return self._write(key, obj, extra=extra)

    def _apply(self, key: Key, want: dict, fingerprint: str) -> None:
        kind, _, name = key
        held = self.scheduler.get(kind, name)
        if held is None or held.state in LEAVING or not _same_spec(held, want):
            held = self.scheduler.apply(kind, name, json.dumps(want))
            log.info("%s %s applied (version %d)", kind, name, held.version)
        self.remember(kind, held)
        self.applied[key] = fingerprint
        self.refused.pop(key, None)

    def _refuse(self, key: Key, obj: dict, fingerprint: str, reason: str) -> Outcome:
        self.refused[key] = (fingerprint, reason)
        self._write(key, obj, refused=reason)
        return self._retry(key, obj)  # e.g. a pipeline whose models come later

    def _retry(self, key: Key, obj: dict) -> Outcome:
        n = self.failures[key] = self.failures.get(key, 0) + 1
        return Outcome(retry=min(30.0, 0.5 * 2 ** min(n, 6)))

    def _delete(self, key: Key, obj: dict, owned: bool) -> Outcome:
        kind, _, name = key
        finalizers = obj["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return Outcome()
        if owned:
            try:
                held = self.scheduler.get(kind, name)
                if held is not None and held.state not in LEAVING:
                    held = self.scheduler.delete(kind, name)
                    log.info("%s %s: deleting at the scheduler", kind, name)
                    held = self.scheduler.get(kind, name)
            except SchedulerError as e:
                log.warning("%s %s: delete: %s", kind, name, e)
                return self._retry(key, obj)
            if held is not None and held.state not in GONE:
                self.remember(kind, held)
                self._write(key, obj)
                return Outcome(retry=5.0)  # the status stream brings the end sooner
        self.kube.set_finalizers(obj, [f for f in finalizers if f != FINALIZER])
        for table in (self.applied, self.observed, self.refused, self.failures):
            table.pop(key, None)
        log.info("%s %s/%s: finalized", *key)
        return Outcome()

    def _write(self, key: Key, obj: dict, refused: str | None = None,
               extra: list | None = None) -> Outcome:
        kind, _, name = key
        if refused is None and key in self.refused:
            refused = self.refused[key][1]
        with self.lock:
            held = self.statuses.get((kind, name))
        new = status.render(kind, obj.get("spec") or {}, obj.get("status"), held, refused,
                            self.observed.get(key), extra or [])
        if not status.same(new, obj.get("status")):
            self.kube.write_status(obj, new)
        return Outcome()


def _same_spec(held: pb.ResourceStatus, want: dict) -> bool:
    try:
        return bool(held.spec_json) and json.loads(held.spec_json) == want
    except ValueError:
        return False
