"""A minimal in-test scheduler: serves WatchStatus(PIPELINE) and ReportPipeline, so the dataflow
services' scheduler adapter is exercised over real gRPC without the full control plane."""

import json
import queue
import threading
import time
from concurrent import futures

import grpc

from runtime.pb import scheduler_pb2 as pb
from runtime.pb import scheduler_pb2_grpc


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self):
        self.pipelines: dict[str, pb.ResourceStatus] = {}
        self.reports: dict[tuple[str, int, str], pb.PipelineReport] = {}
        self._watchers: list[queue.Queue] = []
        self._lock = threading.Lock()
        self.server: grpc.Server | None = None
        self.drop_reports = 0  # the next N reports are lost, as to a busy scheduler
        self.retired: dict[str, int] = {}  # last version of each deleted pipeline
        self.address = ""  # HOST:PORT, set by whoever starts it

    # -- test API -------------------------------------------------------------------------
    def set_pipeline(self, name: str, spec: dict) -> int:
        with self._lock:
            prev = self.pipelines.get(name)
            # as the real scheduler: versions go on after an unload
            version = (prev.version if prev else self.retired.get(name, 0)) + 1
            status = pb.ResourceStatus(kind=pb.PIPELINE, name=name, version=version,
                                       state="PipelineCreating", spec_json=json.dumps(spec))
            self.pipelines[name] = status
            for q in self._watchers:
                q.put(status)
        return version

    def delete_pipeline(self, name: str) -> None:
        with self._lock:
            if (gone := self.pipelines.pop(name, None)) is not None:
                self.retired[name] = gone.version
            self.reports = {k: r for k, r in self.reports.items() if k[0] != name}
            for q in self._watchers:
                q.put(pb.ResourceStatus(kind=pb.PIPELINE, name=name, state="PipelineTerminated"))

    def is_ready(self, name: str, components=("engine", "gateway")) -> bool:
        status = self.pipelines.get(name)
        return status is not None and all(
            (r := self.reports.get((name, status.version, c))) is not None and r.ready
            for c in components)

    def wait_ready(self, names, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.is_ready(n) for n in names):
                return
            time.sleep(0.05)
        missing = [n for n in names if not self.is_ready(n)]
        raise TimeoutError(f"pipelines not reported ready: {missing}; reports: "
                           f"{sorted(self.reports)}")

    def watcher_count(self) -> int:
        return len(self._watchers)

    # -- gRPC -----------------------------------------------------------------------------
    def WatchStatus(self, request, context):
        q: queue.Queue = queue.Queue()
        with self._lock:
            snapshot = list(self.pipelines.values())
            self._watchers.append(q)
        try:
            yield from snapshot
            while context.is_active():
                try:
                    yield q.get(timeout=0.2)
                except queue.Empty:
                    continue
        finally:
            with self._lock:
                self._watchers.remove(q)

    def Status(self, request, context):
        items = [s for n, s in self.pipelines.items() if not request.name or n == request.name]
        if request.name and not items:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pipeline {request.name!r} not found")
        return pb.StatusResponse(items=items)

    def ReportPipeline(self, request, context):
        with self._lock:
            drop, self.drop_reports = self.drop_reports > 0, max(0, self.drop_reports - 1)
        if drop:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the scheduler did not answer")
        self.reports[(request.name, request.version, request.component)] = request
        return pb.Empty()

    def start(self, port: int) -> "FakeScheduler":
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop(0)
