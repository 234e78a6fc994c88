"""Where the Pulumi providers find the scheduler: an address, or a port-forward to its pod
made from a kubeconfig. The calls themselves are runtime.client's (the one client)."""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import grpc

from runtime.client import SchedulerClient, SchedulerError, Unavailable

__all__ = ["Connection", "SchedulerError", "connect"]


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
    def from_props(cls, props: dict | None) -> "Connection":
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
def connect(conn: Connection, timeout: float = 30) -> Iterator[SchedulerClient]:
    """A client of the scheduler `conn` names, once its channel is up (within `timeout`)."""
    conn.validate()
    forward = None
    address = conn.address
    if not address:
        from components.portforward import PortForward

        forward = PortForward(conn.kubeconfig, conn.context, conn.namespace or "", conn.pod,
                              conn.port)  # validate() made sure of the namespace
        address = forward.address
    try:
        client = SchedulerClient(address, timeout=timeout)
        try:
            grpc.channel_ready_future(client.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            client.close()
            raise Unavailable(f"scheduler at {address} did not answer within "
                              f"{timeout:.0f}s") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if forward:
            forward.close()
