"""Talking to the scheduler's gRPC API from the dynamic providers: connect (directly or by
port-forward), apply, delete, and wait for a resource to settle."""

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import grpc

from runtime.pb import scheduler_pb2 as pb
from runtime.pb import scheduler_pb2_grpc as pb_grpc
from runtime.scheduler_auth import SchedulerAuth

KINDS = {"Model": pb.MODEL, "Pipeline": pb.PIPELINE, "Experiment": pb.EXPERIMENT,
         "Server": pb.SERVER}
FAILED = {"Model": {"ModelFailed"}, "Pipeline": {"PipelineFailed"}, "Experiment": set()}
# Not final, but failing if it lasts: a model may be unschedulable only until its server's
# replicas connect; an experiment waits for members that the program creates before it.
RETRIED = {"Model": {"ScheduleFailed"}, "Pipeline": set(), "Experiment": {"ExperimentWaiting"}}
GONE = {"ModelTerminated", "PipelineTerminated"}


class SchedulerError(RuntimeError):
    """The scheduler refused or failed a resource; the message carries its reason."""


@dataclass
class Connection:
    """How to reach the scheduler: `address` (host:port), or a port-forward to `pod` in
    `namespace` made from `kubeconfig` (path or contents) and `context`."""

    address: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    pod: str = "scheduler-0"
    port: int = 9004

    def to_props(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_props(cls, props: dict) -> "Connection":
        return cls(**{k: v for k, v in (props or {}).items() if k in cls.__dataclass_fields__})

    def validate(self) -> None:
        if not self.address and not (self.kubeconfig and self.namespace):
            raise ValueError("scheduler: give an address, or a kubeconfig and namespace "
                             "to port-forward to the scheduler pod")

    def check_files(self) -> None:
        """At preview: the kubeconfig a port-forward will read exists (api_client checks
        again when it connects)."""
        if not self.address:
            from components.portforward import check_kubeconfig

            check_kubeconfig(self.kubeconfig)

    @classmethod
    def from_stack_config(cls, get) -> "Connection | None":
        """The connection the stack config names now (`get(key)` reads `core2:<key>`), as
        infra/program.py builds it; None when the config names no scheduler connection."""
        target = get("target") or "kubernetes"
        if target == "local":
            return cls(address=get("schedulerAddress") or "127.0.0.1:9004")
        if (get("resourceDelivery") or "crd") != "scheduler" or not get("kubeconfig"):
            return None
        kubeconfig = get("kubeconfig")
        from components.portforward import is_path

        if is_path(kubeconfig):
            kubeconfig = os.path.expanduser(kubeconfig)
        return cls(kubeconfig=kubeconfig, context=get("context") or None,
                   namespace=get("namespace") or "core2")


@contextlib.contextmanager
def connect(conn: Connection, timeout: float = 30) -> Iterator[pb_grpc.SchedulerStub]:
    conn.validate()
    forward = None
    address = conn.address
    if not address:
        from components.portforward import PortForward

        forward = PortForward(conn.kubeconfig, conn.context, conn.namespace, conn.pod,
                              conn.port)
        address = forward.address
    channel = SchedulerAuth.from_env().channel(address)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise SchedulerError(f"scheduler at {address} did not answer within "
                                 f"{timeout:.0f}s") from None
        yield pb_grpc.SchedulerStub(channel)
    finally:
        channel.close()
        if forward:
            forward.close()


def _refusal(kind: str, name: str, err: grpc.RpcError) -> SchedulerError:
    return SchedulerError(f"{kind} {name}: {err.details()} ({err.code().name})")


def apply(stub, kind: str, name: str, spec: dict) -> pb.ResourceStatus:
    try:
        return stub.Apply(pb.ApplyRequest(kind=KINDS[kind], name=name,
                                          spec_json=json.dumps(spec, sort_keys=True))).status
    except grpc.RpcError as e:
        raise _refusal(kind, name, e) from None


def status(stub, kind: str, name: str) -> pb.ResourceStatus | None:
    try:
        items = stub.Status(pb.StatusRequest(kind=KINDS[kind], name=name)).items
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise _refusal(kind, name, e) from None
    return next((i for i in items if i.name == name), None)


def delete(stub, kind: str, name: str) -> None:
    try:
        stub.Delete(pb.DeleteRequest(kind=KINDS[kind], name=name))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise _refusal(kind, name, e) from None


def wait_ready(stub, kind: str, name: str, version: int, timeout: float,
               retry_grace: float, interval: float = 0.25) -> pb.ResourceStatus:
    """Poll until `version` (or later) is ready; raise with the scheduler's reason when it
    fails, or when a retried failure (ScheduleFailed) outlasts `retry_grace` seconds."""
    start = time.monotonic()
    failing_since = None
    last = None
    while time.monotonic() - start < timeout:
        last = status(stub, kind, name)
        if last is not None and last.version >= version:
            if last.ready:
                return last
            if last.state in FAILED[kind]:
                raise SchedulerError(f"{kind} {name}: {last.state}: {last.reason}")
            if last.state in RETRIED[kind] or _models_missing(last):
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since >= retry_grace:
                    raise SchedulerError(f"{kind} {name}: {last.state}: {last.reason}")
            else:
                failing_since = None
        time.sleep(interval)
    where = f"{last.state}: {last.reason}" if last is not None else "no status"
    raise SchedulerError(f"{kind} {name}: not ready after {timeout:.0f}s ({where})")


def _models_missing(st: pb.ResourceStatus) -> bool:
    """A pipeline waiting for models the scheduler does not have (it may be loaded before
    them): retried like ScheduleFailed, since the program may create them next."""
    return st.kind == pb.PIPELINE and bool(st.detail_json) and \
        bool(json.loads(st.detail_json).get("modelsMissing"))


def wait_gone(stub, kind: str, name: str, timeout: float, interval: float = 0.25) -> None:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        last = status(stub, kind, name)
        if last is None or last.state in GONE:
            return
        time.sleep(interval)
    raise SchedulerError(f"{kind} {name}: still {last.state} after {timeout:.0f}s")
