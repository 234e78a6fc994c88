"""Thin adapter from the scheduler's API to a dataflow service: watch pipeline statuses, call
`set_pipeline` / `remove_pipeline`, and report readiness back. Reconnects with backoff; while
the scheduler is away the service keeps running the pipelines it has."""

import json
import logging
import threading
from typing import Protocol

import grpc

from runtime.pb import scheduler_pb2 as pb
from runtime.pb import scheduler_pb2_grpc
from runtime.scheduler_auth import SchedulerAuth
from runtime.specs.common import SpecError
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger(__name__)
GONE = ("PipelineTerminating", "PipelineTerminated")
COMPONENT_HEADER = "x-core2-dataflow-component"


class PipelineHost(Protocol):
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None: ...
    def remove_pipeline(self, name: str) -> None: ...


class SchedulerLink:
    def __init__(self, address: str, host: PipelineHost, component: str):
        self.address, self.host, self.component = address, host, component
        self._channel = SchedulerAuth.from_env().channel(address)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
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
        self._channel.close()

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
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch = list(self._pending.items())
            failed = False
            for (name, version), (ready, reason) in batch:
                try:
                    self._stub.ReportPipeline(pb.PipelineReport(
                        name=name, version=version, component=self.component, ready=ready,
                        reason=reason), timeout=5)
                except grpc.RpcError as e:
                    if self._stop.is_set():
                        return
                    log.warning("report %s v%d to scheduler failed: %s; retrying in %.1fs",
                                name, version, e.code(), backoff)
                    failed = True
                    break
                with self._lock:
                    self._reported[name] = (version, ready, reason)
                    if self._pending.get((name, version)) == (ready, reason):
                        del self._pending[(name, version)]
            if failed:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
            else:
                backoff = 0.1

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                # the scheduler counts a component's reports only while it watches
                stream = self._stub.WatchStatus(pb.StatusRequest(kind=pb.PIPELINE),
                                                metadata=((COMPONENT_HEADER, self.component),))
                for status in stream:
                    if not self.connected.is_set():
                        log.info("watching pipelines on scheduler %s", self.address)
                        self.connected.set()
                        with self._lock:  # a restarted scheduler wants every report again
                            self._reported.clear()
                        self._known.clear()
                    backoff = 0.2
                    self._apply(status)
            except grpc.RpcError as e:
                if self._stop.is_set():
                    return
                log.warning("scheduler %s: %s %s; retrying in %.1fs", self.address, e.code(),
                            e.details(), backoff)
            self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _apply(self, status: pb.ResourceStatus) -> None:
        name = status.name
        if status.state in GONE or not status.spec_json:
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
