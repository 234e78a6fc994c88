"""The scheduler API client used by the CLI, the Pulumi providers, the controller and the
dataflow services: calls, errors by gRPC status code, and waits on the WatchStatus stream."""

import json
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from runtime.client.errors import NotFound, SchedulerError, Unavailable, from_rpc
from runtime.client.wait import Goal, Progress, StreamReader
from runtime.kinds import Kind
from runtime.pb import scheduler_pb2 as pb
from runtime.pb import scheduler_pb2_grpc
from runtime.retry import GaveUp, Retry, retry
from runtime.scheduler_auth import AuthConfigError, SchedulerAuth
from runtime.specs.manifest import Resource

ENDED = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
# Before a stream's first status the watcher may not be registered yet: a resource deleted
# in that moment would never be reported, so its status is asked for again this often.
FIRST_STATUS_RECHECK_S = 1.0
# A client that has reached the scheduler retries a call this long while it is unreachable:
# a restart, and gRPC's reconnect back-off (2 s at most, scheduler_auth) after it.
RECONNECT_S = 10.0


class _Broken(Exception):
    """A status stream broke during a wait: reconnect while the deadline allows."""


def autoscaled_replicas(status: pb.ResourceStatus) -> int | None:
    """The autoscaler's replica count in a Server's (or Model's) status, or None when it is
    not autoscaled (`detail.autoscaling.replicas`)."""
    if not status.detail_json:
        return None
    scaled = json.loads(status.detail_json).get("autoscaling", {}).get("replicas")
    return None if scaled is None else int(scaled)


class SchedulerClient:
    """`address` is HOST:PORT; credentials come from the environment (scheduler_auth);
    `timeout` bounds each unary call. Kinds are Kind members or their names ("Model")."""

    def __init__(self, address: str, timeout: float = 10):
        self.address, self.timeout = address, timeout
        try:
            self.channel = SchedulerAuth.from_env().channel(address)
        except AuthConfigError as e:
            raise SchedulerError(str(e)) from None
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)
        self._streams: set[grpc.Future] = set()
        self._reached = False  # a call has been answered (the scheduler existed)
        self._lock = threading.Lock()

    def _call(self, method, request, what: str = ""):
        def once():
            try:
                answer = method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                raise from_rpc(e, self.address, what) from None
            self._reached = True
            return answer

        if not self._reached:  # never reached: say so at once (`core2 up` not running)
            return once()
        try:  # reached before: ride out a scheduler restart and the channel's reconnect
            return retry(once, Retry(what=f"call to scheduler {self.address}",
                                     retry_on=(Unavailable,), timeout=RECONNECT_S, first=0.2,
                                     cap=1.0, quiet_tries=3))
        except GaveUp as e:
            assert isinstance(e.__cause__, SchedulerError)  # the last Unavailable
            raise e.__cause__ from None

    # ---- calls -----------------------------------------------------------------------------
    def apply(self, kind: str, name: str, spec_json: str) -> pb.ResourceStatus:
        k = Kind.of(kind)
        return self._call(self.stub.Apply, pb.ApplyRequest(kind=k.pb, name=name,
                                                           spec_json=spec_json),
                          f"{k} {name}").status

    def apply_resource(self, r: Resource) -> pb.ResourceStatus:
        return self.apply(r.kind, r.name, r.spec_json())

    def delete(self, kind: str, name: str) -> pb.ResourceStatus:
        k = Kind.of(kind)
        return self._call(self.stub.Delete, pb.DeleteRequest(kind=k.pb, name=name),
                          f"{k} {name}").status

    def status(self, kind: str, name: str = "") -> list[pb.ResourceStatus]:
        """Every resource of the kind, or the one named (NotFound if it does not exist)."""
        k = Kind.of(kind)
        return list(self._call(self.stub.Status, pb.StatusRequest(kind=k.pb, name=name),
                               f"{k} {name}".strip()).items)

    def get(self, kind: str, name: str) -> pb.ResourceStatus | None:
        """The named resource's status, or None when the scheduler does not have it."""
        try:
            return next((s for s in self.status(kind, name) if s.name == name), None)
        except NotFound:
            return None

    def report_pipeline(self, report: pb.PipelineReport, timeout: float = 5) -> None:
        """A dataflow component's word on a pipeline version (ready, or why not)."""
        try:
            self.stub.ReportPipeline(report, timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc(e, self.address, f"Pipeline {report.name}") from None

    # ---- the status stream -----------------------------------------------------------------
    def _open(self, kind: Kind, name: str, timeout: float | None,
              metadata: tuple = ()) -> grpc.Future:
        call = self.stub.WatchStatus(pb.StatusRequest(kind=kind.pb, name=name),
                                     timeout=timeout, metadata=metadata or None)
        with self._lock:
            self._streams.add(call)
        call.add_done_callback(self._forget)
        return call

    def _forget(self, call: grpc.Future) -> None:
        with self._lock:
            self._streams.discard(call)

    def watch(self, kind: str, name: str = "", timeout: float | None = None
              ) -> Iterator[pb.ResourceStatus]:
        """The current status of the matching resources, then each change to them, from the
        scheduler's WatchStatus stream; ends after `timeout` seconds (None: never)."""
        k = Kind.of(kind)
        call = self._open(k, name, timeout)
        try:
            yield from call
        except grpc.RpcError as e:
            if e.code() not in ENDED:
                raise from_rpc(e, self.address, f"{k} {name}".strip()) from None
        finally:
            call.cancel()

    def follow(self, kind: str, on_status: Callable[[pb.ResourceStatus], None],
               stop: threading.Event, on_connect: Callable[[], None] = lambda: None,
               on_lost: Callable[[SchedulerError], None] = lambda e: None,
               metadata: tuple = (), cap: float = 2.0) -> None:
        """Follow a kind's status stream until `stop` is set, reconnecting with back-off (up
        to `cap` seconds) while the scheduler is away. `on_connect` runs on each connection's
        first status (after a restart, every status comes again: a time to resync);
        `on_lost` when an established stream breaks. Stop it with `stop` and cancel_streams."""
        k = Kind.of(kind)

        def one_connection() -> None:
            connected = False
            try:
                for status in self._open(k, "", None, metadata):
                    if not connected:
                        connected = True
                        on_connect()
                    on_status(status)
                err = SchedulerError(f"scheduler {self.address} ended the {k} status stream")
            except grpc.RpcError as e:
                err = from_rpc(e, self.address, f"{k} status stream")
            except ValueError:  # "Channel closed": the owner closed the client to stop
                if stop.is_set():
                    return
                raise
            if stop.is_set():
                return
            if not connected:
                raise err  # not connected yet: back off, then again
            on_lost(err)

        while not stop.is_set():
            try:
                retry(one_connection, Retry(what=f"{k} status stream from {self.address}",
                                            retry_on=(SchedulerError,), first=0.2, cap=cap,
                                            stop=stop.is_set))
            except GaveUp:
                return

    def cancel_streams(self) -> None:
        """End every open status stream (their readers see CANCELLED)."""
        with self._lock:
            calls = list(self._streams)
        for call in calls:
            call.cancel()

    # ---- waiting ---------------------------------------------------------------------------
    def wait(self, kind: str, name: str, until: str = "ready", timeout: float = 120,
             progress: Progress = lambda s: None, version: int = 0,
             retry_grace: float | None = None) -> pb.ResourceStatus | None:
        """Wait until a resource is ready (raising Failed with its reason if it fails), gone
        (returns None or the last status), or in the state named by `until` (e.g.
        ModelAvailable, as `seldon ... status -w`), on the scheduler's status stream.
        `progress` sees each change of state or reason; `version`: only that version or a
        later one counts; `retry_grace`: see runtime.client.wait.Goal. A stream that breaks
        before the deadline is opened again; TimedOut when the deadline passes."""
        goal = Goal(Kind.of(kind), name, until, version, retry_grace, progress)
        deadline = time.monotonic() + timeout
        try:
            return retry(lambda: self._wait_on_stream(goal, deadline, timeout),
                         Retry(what=f"{goal.what}: status stream", retry_on=(_Broken,),
                               timeout=timeout, first=0.2, cap=2.0))
        except GaveUp:
            raise goal.timed_out(timeout) from None

    def _wait_on_stream(self, goal: Goal, deadline: float, timeout: float
                        ) -> pb.ResourceStatus | None:
        call = self._open(goal.kind, goal.name, max(0.0, deadline - time.monotonic()))
        stream = StreamReader(call)
        try:
            try:  # the status now: the stream says nothing of a resource that does not exist
                now = self.get(goal.kind, goal.name)
                if goal.see(now):
                    return now
            except Unavailable as e:
                if not goal.seen:
                    raise  # never connected: say so at once
                raise _Broken(str(e)) from None
            streamed = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise goal.timed_out(timeout)
                grace = goal.grace_left()
                wait_s = min(left, FIRST_STATUS_RECHECK_S if not streamed else left,
                             left if grace is None else max(grace, 0.0))
                try:
                    s = stream.next(wait_s)
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise goal.timed_out(timeout) from None
                    raise _Broken(f"{e.code().name}: {e.details()}") from None
                except EOFError as e:
                    raise _Broken(str(e)) from None
                if s is None:
                    goal.check_grace()
                    if not streamed and goal.see(now := self.get(goal.kind, goal.name)):
                        return now
                    continue
                streamed = True
                if goal.see(s):
                    return s
        finally:
            call.cancel()

    def close(self) -> None:
        self.cancel_streams()
        self.channel.close()
