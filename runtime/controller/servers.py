"""What a Server CR's replica count drives: the StatefulSet of that name on a cluster, or the
local supervisor's server processes in local mode (`core2 up --kube`).

A Server with minReplicas..maxReplicas is scaled by the scheduler's server autoscaler: its
count comes from the scheduler's status (`detail.autoscaling.replicas`, lowered only once the
leaving replica is drained), not from spec.replicas."""

from pathlib import Path

from runtime.client import autoscaled_replicas
from runtime.controller.kube import Kube
from runtime.pb import scheduler_pb2 as pb


def wanted_replicas(spec: dict, status: pb.ResourceStatus | None) -> int:
    """The scheduler's count for an autoscaled Server, else the spec's."""
    scaled = autoscaled_replicas(status) if status is not None else None
    return scaled if scaled is not None else spec.get("replicas", 1)


class ClusterServers:
    def __init__(self, kube: Kube):
        self.kube = kube

    def scale(self, namespace: str, name: str, spec: dict,
              status: pb.ResourceStatus | None = None) -> tuple[bool, str]:
        return self.kube.scale_server(namespace, name, wanted_replicas(spec, status))


class LocalServers:
    """Asks the local supervisor to start a Server's replicas it does not run yet (as
    `core2 apply` of a Server does); the local platform cannot scale a running server."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.requested: dict[str, Path] = {}

    def scale(self, namespace: str, name: str, spec: dict,
              status: pb.ResourceStatus | None = None) -> tuple[bool, str]:
        """(The supervisor follows an autoscaled server's count itself: local.scaling.)"""
        from runtime.local.config import LocalServer
        from runtime.local.platform import read_state
        from runtime.local.supervisor import request_server

        state = read_state(self.run_dir) or {}
        if name in {k.rsplit("-", 1)[0] for k in state.get("replicas", {})}:
            return True, "running in the local platform"
        if not state.get("supervisor"):
            return False, "no local supervisor to start its replicas"
        if name not in self.requested:
            self.requested[name] = request_server(self.run_dir, LocalServer(name=name, **spec))
        error = self.requested[name].with_suffix(".error")
        if error.exists():
            return False, error.read_text()
        return False, f"starting {spec.get('replicas', 1)} replica(s)"
