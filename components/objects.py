"""Turn rendered manifests (plain dicts) into pulumi_kubernetes resources.

Components render their objects as dicts first (pure functions, easy to review and test),
then register them here; the logical name carries kind and object name so URNs never collide.
"""

import re

import pulumi
import pulumi_kubernetes as k8s

_CLASSES = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
}


def snake_case(key: str) -> str:
    """camelCase (Kubernetes, stack config) to the snake_case Pulumi's Python SDK takes."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def logical_name(prefix: str, manifest: dict) -> str:
    return f"{prefix}-{manifest['kind'].lower()}-{manifest['metadata']['name']}"


def register(prefix: str, manifest: dict, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    key = (manifest["apiVersion"], manifest["kind"])
    if key not in _CLASSES:
        raise ValueError(f"{manifest['kind']} {manifest['apiVersion']}: no resource class")
    kwargs = {snake_case(k): v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    return _CLASSES[key](logical_name(prefix, manifest), **kwargs, opts=opts)
