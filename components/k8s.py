"""Small builders for the Kubernetes objects every core2 component renders.

Objects are plain camelCase dicts (exactly what the API server and the schema validator see);
pulumi_kubernetes passes them through unchanged.
"""

import hashlib
import json
from dataclasses import dataclass, field

PART_OF = "core2"
ENVIRONMENT_LABEL = "core2.io/environment"


def labels(component: str, instance: str | None = None) -> dict:
    """Recommended labels; `app.kubernetes.io/part-of` is what the NetworkPolicies select on."""
    out = {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if instance:
        out["app.kubernetes.io/instance"] = instance
    return out


def selector(component: str, instance: str | None = None) -> dict:
    """The immutable subset of labels used in selectors (never includes managed-by)."""
    out = {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": PART_OF}
    if instance:
        out["app.kubernetes.io/instance"] = instance
    return out


def metadata(name: str, namespace, component: str, instance: str | None = None,
             annotations: dict | None = None) -> dict:
    out = {"name": name, "namespace": namespace, "labels": labels(component, instance)}
    if annotations:
        out["annotations"] = annotations
    return out


def scrape_annotations(port: int, path: str = "/metrics") -> dict:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": path}


def checksum(obj) -> str:
    """Stable digest of rendered config; put on a pod template so pods roll when it changes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass
class Resources:
    """Container requests/limits. Limits are always set (the policy pack requires them)."""

    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"
    extra_limits: dict = field(default_factory=dict)  # e.g. {"nvidia.com/gpu": "1"}

    @classmethod
    def from_config(cls, cfg: dict | None, default: "Resources") -> "Resources":
        cfg = cfg or {}
        return cls(
            cpu_request=str(cfg.get("cpuRequest", default.cpu_request)),
            memory_request=str(cfg.get("memoryRequest", default.memory_request)),
            cpu_limit=str(cfg.get("cpuLimit", default.cpu_limit)),
            memory_limit=str(cfg.get("memoryLimit", default.memory_limit)),
            extra_limits=dict(default.extra_limits),
        )

    def render(self) -> dict:
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit, **self.extra_limits}
        requests = {"cpu": self.cpu_request, "memory": self.memory_request, **self.extra_limits}
        return {"requests": requests, "limits": limits}


def tcp_probe(port: int, period: int = 10, initial: int = 5, failures: int = 3) -> dict:
    return {"tcpSocket": {"port": port}, "periodSeconds": period,
            "initialDelaySeconds": initial, "failureThreshold": failures}


def http_probe(port: int, path: str, period: int = 10, initial: int = 5,
               failures: int = 3) -> dict:
    return {"httpGet": {"port": port, "path": path}, "periodSeconds": period,
            "initialDelaySeconds": initial, "failureThreshold": failures}


# Runtime containers run as the image's non-root user, read-only root, no privilege escalation.
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                  "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}


def env_from_field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def tmp_volume() -> tuple[dict, dict]:
    """A writable /tmp for containers whose root filesystem is read-only."""
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}


def with_pull_secrets(manifests: list[dict], secrets: list[str]) -> list[dict]:
    """Registry credentials for every pod template (private registries, on-prem mirrors)."""
    for m in manifests:
        pod = m.get("spec", {}).get("template", {}).get("spec")
        if pod is not None and secrets:
            pod["imagePullSecrets"] = [{"name": s} for s in secrets]
    return manifests


def spread(pod_selector: dict) -> list[dict]:
    """Spread a replicated workload's pods over zones and nodes. ScheduleAnyway: a cluster with
    one zone (or fewer nodes than replicas) still schedules every pod, only less evenly."""
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(pod_selector)}}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]


def disruption_budget(name: str, namespace: str, component: str, pod_selector: dict,
                      instance: str | None = None) -> dict:
    """At most one pod of the workload evicted at a time (node drains, cluster upgrades).
    maxUnavailable, not minAvailable: it stays right when an HPA changes the replica count."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(name, namespace, component, instance),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(pod_selector)}}}
