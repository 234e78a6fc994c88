"""The controller on a cluster: a Deployment (one replica leads, the others stand by on the
Lease), its ServiceAccount, and a namespaced Role with exactly what it uses: Seldon's CRs
(read, finalizers, status), its Lease, and the scale of the Servers' StatefulSets."""

from components.k8s import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Resources,
    env_from_field,
    http_probe,
    metadata,
    selector,
    spread,
    tmp_volume,
)
from components.scheduler import API_PORT
from components.scheduler import NAME as SCHEDULER
from runtime.controller.crds import GROUP
from runtime.kinds import Kind

NAME = "controller"
ACCOUNT = "core2-controller"
LEASE = "core2-controller"
HEALTH_PORT = 8081  # Seldon's operator serves its probes here too
DEFAULT_RESOURCES = Resources("50m", "128Mi", "500m", "512Mi")
KINDS = tuple(k.plural for k in Kind)  # the CR plurals the Role names


def rules() -> list[dict]:
    return [
        # list+watch fills the cache; patch adds and removes the finalizer
        {"apiGroups": [GROUP], "resources": list(KINDS),
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{k}/status" for k in KINDS],
         "verbs": ["get", "patch"]},
        # with OwnerReferencesPermissionEnforcement, setting finalizers needs this
        {"apiGroups": [GROUP], "resources": [f"{k}/finalizers" for k in KINDS],
         "verbs": ["update"]},
        # leader election; `create` cannot be limited by name (the Lease may not exist yet)
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [LEASE], "verbs": ["get", "update"]},
        # a Server CR sets its StatefulSet's replicas (unless Pulumi owns them)
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets/scale"],
         "verbs": ["get", "patch"]},
    ]


def render(namespace: str, image: str, pull_policy: str, resources: Resources,
           replicas: int = 2, env: list[dict] | None = None) -> list[dict]:
    """`env`: the scheduler token, as every scheduler client gets it."""
    tmp, tmp_mount = tmp_volume()
    container = {
        "name": NAME, "image": image, "imagePullPolicy": pull_policy,
        "command": ["python", "-m", "runtime.controller"],
        "args": ["--scheduler", f"{SCHEDULER}:{API_PORT}", "--namespace", namespace,
                 "--lease-namespace", namespace, "--lease-name", LEASE,
                 "--health-host", "0.0.0.0", "--health-port", str(HEALTH_PORT),
                 "--scale-statefulsets"],
        "env": [env_from_field("POD_NAME", "metadata.name"),
                env_from_field("POD_NAMESPACE", "metadata.namespace"), *(env or [])],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        # /readyz: a follower is ready; a leader once it has listed every kind
        "readinessProbe": http_probe(HEALTH_PORT, "/readyz", period=5),
        "livenessProbe": http_probe(HEALTH_PORT, "/healthz", initial=10, failures=6),
        "resources": resources.render(),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [tmp_mount],
    }
    pod = {"serviceAccountName": ACCOUNT, "automountServiceAccountToken": True,
           # no <SERVICE>_PORT variables: they could set CORE2_* settings
           "enableServiceLinks": False,
           "securityContext": RESTRICTED_POD, "terminationGracePeriodSeconds": 10,
           "containers": [container], "volumes": [tmp]}
    if replicas > 1:
        pod["topologySpreadConstraints"] = spread(selector(NAME))
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": metadata(ACCOUNT, namespace, "rbac")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": metadata(ACCOUNT, namespace, "rbac"), "rules": rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": metadata(ACCOUNT, namespace, "rbac"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": metadata(NAME, namespace, NAME),
         "spec": {"replicas": replicas, "selector": {"matchLabels": selector(NAME)},
                  "template": {"metadata": {"labels": selector(NAME)}, "spec": pod}}},
    ]
