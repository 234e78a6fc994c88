"""python -m runtime.controller: Seldon's CRs reconciled with the scheduler (thin wiring).

    python -m runtime.controller --scheduler HOST:PORT [--kubeconfig FILE] [--namespace NS]...

Off a cluster it needs --kubeconfig; in a pod it uses the pod's service account. Only the
replica holding the Lease acts; the others wait as followers. /healthz, /readyz and /state
(JSON) are served on --health-port.
"""

import json
import logging
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kubernetes import client, config
from pydantic import Field, ValidationInfo, field_validator

from runtime import logs
from runtime.client import SchedulerClient
from runtime.controller.controller import Controller
from runtime.controller.kube import Kube
from runtime.controller.leader import Election
from runtime.controller.reconcile import Reconciler
from runtime.controller.servers import ClusterServers, LocalServers
from runtime.settings import ServiceSettings, load

log = logging.getLogger("runtime.controller")


class ControllerSettings(ServiceSettings):
    """Flags of `python -m runtime.controller` (or CORE2_<NAME> variables)."""

    scheduler: str = Field(description="scheduler API HOST:PORT")
    kubeconfig: str | None = Field(None, description="kubeconfig file (default: in-cluster "
                                   "config)")
    context: str | None = Field(None, description="kubeconfig context")
    namespace: list[str] = Field([], description="watch this namespace (repeatable; default: "
                                 "every namespace)")
    lease_name: str = Field("core2-controller", description="the leader-election Lease")
    lease_namespace: str | None = Field(None, description="default: POD_NAMESPACE, else the "
                                        "first --namespace, else `default`")
    identity: str = Field(default_factory=lambda: os.environ.get("POD_NAME") or
                          f"{socket.gethostname()}-{os.getpid()}",
                          description="this replica's name in the Lease (default: POD_NAME)")
    lease_duration: int = Field(15, description="seconds")
    renew_deadline: float = Field(10.0, description="seconds")
    retry_period: float = Field(2.0, description="seconds")
    field_manager: str = Field("core2-controller", description="server-side apply manager")
    workers: int = Field(4, ge=1, description="reconcile workers")
    health_port: int = Field(0, ge=0, le=65535, description="0: no health server")
    health_host: str = Field("127.0.0.1", description="0.0.0.0 in a pod")
    storage_base: Path | None = Field(None, description="local mode: relative plain "
                                      "storageUris are taken from here")
    scale_statefulsets: bool = Field(False, description="a Server CR sets its StatefulSet's "
                                     "replicas")
    run_dir: Path | None = Field(None, description="local mode: a Server CR starts its "
                                 "replicas here (not with --scale-statefulsets)")

    @field_validator("run_dir")
    @classmethod
    def _one_server_mode(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and info.data.get("scale_statefulsets"):
            raise ValueError("not allowed with --scale-statefulsets")
        return v


def parse(argv: list[str] | None) -> ControllerSettings:
    return load(ControllerSettings, "python -m runtime.controller", argv)


def serve_health(host: str, port: int, election: Election, controller: Controller) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            leading, progress = election.leading.is_set(), controller.progress
            state = {"identity": election.identity, "leader": leading,
                     "synced": leading and controller.synced,
                     "queued": len(controller.queue) if leading else 0,
                     # seconds from leading to every listed CR reconciled once
                     "resyncSeconds": progress.drained_at - progress.started_at
                     if leading and progress.drained_at else None}
            ok = {"/healthz": True, "/readyz": not leading or controller.synced,
                  "/state": True}.get(self.path)
            body = json.dumps(state).encode()
            self.send_response(404 if ok is None else 200 if ok else 503)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    logs.setup("controller", a.log_level)
    if a.kubeconfig:
        config.load_kube_config(config_file=a.kubeconfig, context=a.context)
    else:
        config.load_incluster_config()
    kube = Kube(client.ApiClient(), a.field_manager)
    scheduler = SchedulerClient(a.scheduler)
    servers = ClusterServers(kube) if a.scale_statefulsets else \
        LocalServers(a.run_dir) if a.run_dir else None
    controller = Controller(kube, scheduler, Reconciler(kube, scheduler, a.storage_base,
                                                        servers), a.namespace, a.workers)
    lease_ns = a.lease_namespace or os.environ.get("POD_NAMESPACE") or \
        (a.namespace[0] if a.namespace else "default")
    election = Election(a.lease_name, lease_ns, a.identity, a.lease_duration,
                        a.renew_deadline, a.retry_period)
    if a.health_port:
        serve_health(a.health_host, a.health_port, election, controller)

    def terminate(*_) -> None:
        election.release()
        os._exit(0)  # the elector's threads do not stop on request

    def lost() -> None:
        log.error("%s lost the Lease; exiting", a.identity)
        os._exit(1)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    log.info("%s: watching %s; Lease %s/%s", a.identity, ", ".join(a.namespace) or
             "every namespace", lease_ns, a.lease_name)
    election.run(controller.run, lost)
    return 1


if __name__ == "__main__":
    sys.exit(main())
