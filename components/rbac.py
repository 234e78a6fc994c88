"""Service accounts (no API token mounted: the runtime never calls the Kubernetes API) and the
deployer Role a CI identity needs to reach the scheduler through a port-forward."""

from components.k8s import metadata

ACCOUNTS = {"scheduler": "core2-scheduler", "envoy": "core2-envoy",
            "dataflow": "core2-dataflow", "server": "core2-server"}
DEPLOYER_ROLE = "core2-deployer"


def render(namespace: str, deployer_subjects: list[dict]) -> list[dict]:
    out = [{"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata(account, namespace, "rbac"),
            "automountServiceAccountToken": False} for account in ACCOUNTS.values()]
    out.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": metadata(DEPLOYER_ROLE, namespace, "rbac"),
        # the dynamic providers find the scheduler pod and forward a port to its API
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
        ],
    })
    if deployer_subjects:
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": metadata(DEPLOYER_ROLE, namespace, "rbac"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": DEPLOYER_ROLE},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **s}
                         if s.get("kind") != "ServiceAccount" else {"namespace": namespace, **s}
                         for s in deployer_subjects],
        })
    return out
