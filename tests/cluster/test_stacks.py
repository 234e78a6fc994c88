"""The shipped cluster stacks planned and applied by the real Pulumi engine and the real
Kubernetes provider against a real kube-apiserver: every object accepted (built-in kinds by
the API server's own validation, Seldon's and Strimzi's kinds by their CRDs), a second run
changes nothing, and destroy leaves nothing of the stack behind."""

import ast
import re

import pytest
from kubernetes import client

from runtime.procs import wait_until
from tests.cluster.conftest import namespace_exists

# several real engine runs, each planning a whole stack
pytestmark = pytest.mark.timeout(1800)

def changes(output: str) -> dict:
    """The engine's change summary, e.g. {'same': 40} or {'create': 3, 'update': 1}."""
    found = re.findall(r"^CHANGES (\{.*\})$", output, re.M)
    assert found, output[-3000:]
    return ast.literal_eval(found[-1])


def stack_objects(kube, namespace: str) -> dict[str, list[str]]:
    """Names of the stack's objects in its namespace, by kind."""
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    mine = "app.kubernetes.io/part-of=core2"
    listings = {"StatefulSet": apps.list_namespaced_stateful_set,
                "Deployment": apps.list_namespaced_deployment,
                "Service": core.list_namespaced_service,
                "ConfigMap": core.list_namespaced_config_map,
                "Secret": core.list_namespaced_secret,
                "ServiceAccount": core.list_namespaced_service_account}
    found = {kind: [o.metadata.name for o in list_(namespace, label_selector=mine).items]
             for kind, list_ in listings.items()}
    for kind in ("models", "pipelines", "experiments"):
        found[kind] = [o["metadata"]["name"] for o in custom.list_namespaced_custom_object(
            "mlops.seldon.io", "v1alpha1", namespace, kind)["items"]]
    return found


@pytest.mark.parametrize("stack", ["staging", "prod-aws", "prod-gcp", "onprem"])
def test_stack_is_accepted_by_a_real_api_server_and_destroyed_cleanly(stack, stack_dir,
                                                                      cluster):
    sd = stack_dir(stack)
    # no Helm registry is reachable here; Strimzi's CRDs are installed by the fixture
    sd.values["core2:strimziInstallOperator"] = False
    sd.save()
    namespace = sd.values["core2:namespace"]

    assert changes(sd.run("preview").ok().output).get("create", 0) > 20
    sd.run("up").ok()

    objects = stack_objects(cluster, namespace)
    assert "scheduler" in objects["StatefulSet"] and "envoy" in objects["Deployment"]
    assert sorted(objects["models"]) == sorted(m["name"] for m in sd.values["core2:models"])
    assert len(objects["experiments"]) == len(sd.values.get("core2:experiments", []))
    if sd.values.get("core2:kafkaMode") == "strimzi":
        kafka = client.CustomObjectsApi(cluster).list_namespaced_custom_object(
            "kafka.strimzi.io", "v1beta2", namespace, "kafkas")["items"]
        assert [k["metadata"]["name"] for k in kafka] == ["core2"]
    # stored as the API server defaults it, e.g. a Deployment's strategy
    envoy = client.AppsV1Api(cluster).read_namespaced_deployment("envoy", namespace)
    assert envoy.spec.strategy.type == "RollingUpdate"

    second = sd.run("up").ok().output
    assert set(changes(second)) == {"same"}, second[-3000:]

    sd.run("destroy").ok()
    # deletions finish as on a cluster: the garbage collector removes what a foreground
    # deletion waits for, the namespace controller finalizes the namespace
    wait_until(lambda: not namespace_exists(cluster, namespace), 120,
               f"namespace {namespace} to be deleted")
    left = {kind: names for kind, names in stack_objects(cluster, namespace).items() if names}
    assert not left, left
    # the Seldon CRDs are cluster-wide and stay for other stacks
    crds = client.ApiextensionsV1Api(cluster).list_custom_resource_definition().items
    assert "models.mlops.seldon.io" in {c.metadata.name for c in crds}
