"""Thin adapter from the scheduler's API to a dataflow service: watch pipeline statuses, call
`set_pipeline` / `remove_pipeline`, and report readiness back. Reconnects with backoff; while
the scheduler is away the service keeps running the pipelines it has."""

import json
import logging
import threading
from typing import Protocol

from runtime.client import SchedulerClient, SchedulerError
from runtime.kinds import GONE, TERMINATING, Kind
from runtime.pb import scheduler_pb2 as pb
from runtime.retry import GaveUp, Retry, retry
from runtime.specs.common import SpecError
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger(__name__)
LEAVING = GONE | TERMINATING
COMPONENT_HEADER = "x-core2-dataflow-component"


class PipelineHost(Protocol):
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None: ...
    def remove_pipeline(self, name: str) -> None: ...


class SchedulerLink:
    def __init__(self, address: str, host: PipelineHost, component: str):
        self.address, self.host, self.component = address, host, component
        self._client = SchedulerClient(address)
        self._known: dict[str, int] = {}
        # what the scheduler has taken, per pipeline: (version, ready, reason); and what it is
        # still to be told, per (name, version): (ready, reason), retried until taken
        self._reported: dict[str, tuple[int, bool, str]] = {}
        self._pending: dict[tuple[str, int], tuple[bool, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.connected = threading.Event()

    def start(self) -> "SchedulerLink":
        threading.Thread(target=self._run, name=f"scheduler-{self.component}",
                         daemon=True).start()
        threading.Thread(target=self._send, name=f"reports-{self.component}",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._client.close()

    def report(self, name: str, version: int, ready: bool, reason: str = "") -> None:
        """Tell the scheduler whether this component runs the pipeline version. Returns at once:
        a sender thread delivers it, and retries until the scheduler takes it (a report lost
        to a busy or restarting scheduler would leave the pipeline PipelineCreating while it
        serves). Only changes are sent: every report makes the scheduler publish the
        pipeline's status again."""
        key, value = (name, version), (ready, reason)
        with self._lock:
            if key not in self._pending and self._reported.get(name) == (version, *value):
                return
            self._pending[key] = value
        self._wake.set()

    def _send(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                retry(self._send_pending, Retry(
                    what=f"pipeline reports to scheduler {self.address}",
                    retry_on=(SchedulerError,), first=0.1, cap=2.0, stop=self._stop.is_set))
            except GaveUp:
                return

    def _send_pending(self) -> None:
        """Send every pending report (as pending now: a retry sends the latest ones)."""
        with self._lock:
            batch = list(self._pending.items())
        for (name, version), (ready, reason) in batch:
            self._client.report_pipeline(pb.PipelineReport(
                name=name, version=version, component=self.component, ready=ready,
                reason=reason))
            with self._lock:
                self._reported[name] = (version, ready, reason)
                if self._pending.get((name, version)) == (ready, reason):
                    del self._pending[(name, version)]

    def _run(self) -> None:
        def connected() -> None:
            log.info("watching pipelines on scheduler %s", self.address)
            self.connected.set()
            with self._lock:  # a restarted scheduler wants every report again
                self._reported.clear()
            self._known.clear()

        # the scheduler counts a component's reports only while it watches
        self._client.follow(Kind.PIPELINE, self._apply, self._stop, connected,
                            self._lost, metadata=((COMPONENT_HEADER, self.component),),
                            cap=5.0)

    def _lost(self, e: SchedulerError) -> None:
        log.warning("%s; reconnecting", e)
        self.connected.clear()

    def _apply(self, status: pb.ResourceStatus) -> None:
        name = status.name
        if status.state in LEAVING or not status.spec_json:
            if self._known.pop(name, None) is not None:
                self.host.remove_pipeline(name)
            with self._lock:
                self._reported.pop(name, None)
                self._pending = {k: v for k, v in self._pending.items() if k[0] != name}
            return
        if self._known.get(name) == status.version:
            return
        try:
            spec = PipelineSpec.parse(json.loads(status.spec_json), f"Pipeline {name}: spec")
        except (SpecError, ValueError) as e:
            self.report(name, status.version, False, f"invalid spec: {e}")
            return
        self._known[name] = status.version
        self.host.set_pipeline(name, status.version, spec)
