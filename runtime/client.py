"""A small client of the scheduler API, shared by the CLI and the Pulumi providers."""

import json
import time
from collections.abc import Callable, Iterator

import grpc

from runtime.pb import scheduler_pb2 as pb
from runtime.pb import scheduler_pb2_grpc
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth
from runtime.specs.manifest import Resource

KIND = {"Model": pb.MODEL, "Server": pb.SERVER, "Pipeline": pb.PIPELINE,
        "Experiment": pb.EXPERIMENT}
FAILED_STATES = {"ModelFailed", "ScheduleFailed", "PipelineFailed"}
GONE_STATES = {"ModelTerminated", "PipelineTerminated", "Terminated"}
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


def autoscaled_replicas(status: pb.ResourceStatus) -> int | None:
    """The autoscaler's replica count in a Server's (or Model's) status, or None when it is
    not autoscaled (`detail.autoscaling.replicas`)."""
    if not status.detail_json:
        return None
    scaled = json.loads(status.detail_json).get("autoscaling", {}).get("replicas")
    return None if scaled is None else int(scaled)


class SchedulerError(Exception):
    """The scheduler refused a request or is unreachable; the message says why.
    `invalid` is true when the request itself was refused: a spec error (INVALID_ARGUMENT) or
    one no server could ever satisfy (FAILED_PRECONDITION)."""

    def __init__(self, message: str, invalid: bool = False):
        super().__init__(message)
        self.invalid = invalid


class SchedulerClient:
    def __init__(self, address: str, timeout: float = 10):
        self.address, self.timeout = address, timeout
        try:
            self.channel = SchedulerAuth.from_env().channel(address)
        except AuthConfigError as e:
            raise SchedulerError(str(e)) from None
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    def _error(self, e: grpc.RpcError) -> SchedulerError:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            return SchedulerError(f"scheduler not reachable at {self.address} "
                                  f"(is `core2 up` running?): {e.details()}")
        return SchedulerError(e.details(), invalid=e.code() in REFUSED)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def watch(self, kind: str, name: str = "", timeout: float | None = None
              ) -> Iterator[pb.ResourceStatus]:
        """The current status of the matching resources, then each change to them, from the
        scheduler's WatchStatus stream; ends after `timeout` seconds (None: never)."""
        call = self.stub.WatchStatus(pb.StatusRequest(kind=KIND[kind], name=name),
                                     timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                raise self._error(e) from None
        finally:
            call.cancel()

    def apply(self, kind: str, name: str, spec_json: str) -> pb.ResourceStatus:
        return self._call(self.stub.Apply, pb.ApplyRequest(kind=KIND[kind], name=name,
                                                           spec_json=spec_json)).status

    def apply_resource(self, r: Resource) -> pb.ResourceStatus:
        return self.apply(r.kind, r.name, r.spec_json())

    def delete(self, kind: str, name: str) -> pb.ResourceStatus:
        return self._call(self.stub.Delete, pb.DeleteRequest(kind=KIND[kind], name=name)).status

    def status(self, kind: str, name: str = "") -> list[pb.ResourceStatus]:
        return list(self._call(self.stub.Status,
                               pb.StatusRequest(kind=KIND[kind], name=name)).items)

    def get(self, kind: str, name: str) -> pb.ResourceStatus | None:
        try:
            return self.status(kind, name)[0]
        except SchedulerError as e:
            if "not found" in str(e):
                return None
            raise

    def wait(self, kind: str, name: str, until: str = "ready", timeout: float = 120,
             progress: Callable[[pb.ResourceStatus], None] = lambda s: None
             ) -> pb.ResourceStatus | None:
        """Wait until a resource is ready (raising with its reason if it fails), gone, or in
        the state named by `until` (e.g. ModelAvailable, as `seldon ... status -w`)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            s = self.get(kind, name)
            if s is not None and (last is None or (s.state, s.reason) != (last.state,
                                                                          last.reason)):
                progress(s)
                last = s
            if until == "gone" and (s is None or s.state in GONE_STATES):
                return s
            if until != "gone" and s is not None:
                if s.ready if until == "ready" else s.state == until:
                    return s
                if s.state in FAILED_STATES and s.reason:
                    raise SchedulerError(f"{kind} {name}: {s.state}: {s.reason}")
            if until != "gone" and s is None:
                raise SchedulerError(f"{kind} {name} not found")
            if time.monotonic() > deadline:
                state = f"{last.state} {last.reason}".strip() if last else "unknown"
                raise SchedulerError(f"{kind} {name}: not {until} after {timeout:.0f}s "
                                     f"(last state: {state})")
            time.sleep(0.1)

    def close(self):
        self.channel.close()

