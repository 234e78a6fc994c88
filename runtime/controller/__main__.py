"""python -m runtime.controller: Seldon's CRs reconciled with the scheduler (thin wiring).

    python -m runtime.controller --scheduler HOST:PORT [--kubeconfig FILE] [--namespace NS]...

Off a cluster it needs --kubeconfig; in a pod it uses the pod's service account. Only the
replica holding the Lease acts; the others wait as followers. /healthz, /readyz and /state
(JSON) are served on --health-port.
"""

import argparse
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

from runtime.client import SchedulerClient
from runtime.controller.controller import Controller
from runtime.controller.kube import Kube
from runtime.controller.leader import Election
from runtime.controller.reconcile import Reconciler
from runtime.controller.servers import ClusterServers, LocalServers

log = logging.getLogger("runtime.controller")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.controller", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheduler", required=True, help="scheduler API HOST:PORT")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--namespace", action="append", default=[],
                   help="watch this namespace (repeatable; default: every namespace)")
    p.add_argument("--lease-name", default="core2-controller")
    p.add_argument("--lease-namespace", help="default: POD_NAMESPACE, else the first "
                   "--namespace, else `default`")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or
                   f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--lease-duration", type=int, default=15, help="seconds")
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--field-manager", default="core2-controller")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--health-port", type=int, default=0, help="0: no health server")
    p.add_argument("--health-host", default="127.0.0.1", help="0.0.0.0 in a pod")
    p.add_argument("--storage-base", type=Path,
                   help="local mode: relative plain storageUris are taken from here")
    servers = p.add_mutually_exclusive_group()
    servers.add_argument("--scale-statefulsets", action="store_true",
                         help="a Server CR sets its StatefulSet's replicas")
    servers.add_argument("--run-dir", type=Path,
                         help="local mode: a Server CR starts its replicas here")
    return p.parse_args(argv)


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
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
