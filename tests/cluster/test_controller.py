"""The controller against a real kube-apiserver + etcd, serving the CRs with a real local
runtime (`core2 up --kube`): Seldon's sample YAML applied with kubectl loads and serves,
spec changes roll without a failed request, deletes unload before the CR goes, refusals show
the scheduler's reason, crashes resync without reloading, and only the Lease holder acts."""

import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from components import controller
from runtime.controller import crds
from runtime.controller.kube import FINALIZER
from runtime.local.config import LocalAutoscaling, LocalKube
from runtime.local.platform import pid_alive, read_state
from runtime.procs import Service, free_port, python_module, wait_until
from tests.cluster.controlplane import tool
from tests.conftest import IRIS2_CLASS, IRIS_CLASS, SAMPLES

pytestmark = pytest.mark.timeout(600)
LEASE_S = 4
_names = itertools.count()


@pytest.fixture(scope="module")
def seldon_crds(kube):
    ext = client.ApiextensionsV1Api(kube)
    for definition in crds.all_crds():
        try:
            ext.create_custom_resource_definition(definition)
        except ApiException as e:
            if e.status != 409:
                raise

    def established() -> bool:
        return all(any(c.type == "Established" and c.status == "True"
                       for c in (ext.read_custom_resource_definition(d["metadata"]["name"])
                                 .status.conditions or []))
                   for d in crds.all_crds())
    wait_until(established, 30, "the Seldon CRDs to be established")
    return kube


@pytest.fixture
def namespace(seldon_crds):
    core, custom = client.CoreV1Api(seldon_crds), client.CustomObjectsApi(seldon_crds)
    name = f"ctl-{next(_names)}-{int(time.time()) % 100000}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    for plural in ("experiments", "pipelines", "models", "servers"):  # no controller left
        for obj in custom.list_namespaced_custom_object(crds.GROUP, crds.VERSION, name,
                                                        plural)["items"]:
            custom.patch_namespaced_custom_object(
                crds.GROUP, crds.VERSION, name, plural, obj["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json")
    core.delete_namespace(name)


class Cluster:
    """The test namespace as a user sees it: kubectl and the CRs."""

    def __init__(self, kube, kubeconfig, namespace: str):
        self.custom = client.CustomObjectsApi(kube)
        self.kubeconfig, self.ns = str(kubeconfig), namespace

    def kubectl(self, *args: str) -> str:
        out = subprocess.run([tool("kubectl"), "--kubeconfig", self.kubeconfig, "-n", self.ns,
                              *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def get(self, kind: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                crds.GROUP, crds.VERSION, self.ns, kind.lower() + "s", name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def apply(self, kind: str, name: str, spec: dict) -> None:
        body = {"apiVersion": f"{crds.GROUP}/{crds.VERSION}", "kind": kind,
                "metadata": {"name": name}, "spec": spec}
        self.custom.create_namespaced_custom_object(crds.GROUP, crds.VERSION, self.ns,
                                                    kind.lower() + "s", body)

    def patch_spec(self, kind: str, name: str, spec: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            crds.GROUP, crds.VERSION, self.ns, kind.lower() + "s", name, {"spec": spec},
            _content_type="application/merge-patch+json")

    def delete(self, kind: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(crds.GROUP, crds.VERSION, self.ns,
                                                    kind.lower() + "s", name)

    def condition(self, kind: str, name: str, ctype: str = "Ready") -> dict:
        obj = self.get(kind, name) or {}
        return next((c for c in obj.get("status", {}).get("conditions", [])
                     if c["type"] == ctype), {})

    def wait_ready(self, kind: str, name: str, timeout: float = 90) -> dict:
        wait_until(lambda: self.condition(kind, name).get("status") == "True", timeout,
                   f"{kind} {name} Ready (last: {self.condition(kind, name)})")
        return self.get(kind, name)

    def managers(self, kind: str, name: str) -> set[str]:
        obj = self.get(kind, name) or {}
        return {f["manager"] for f in obj["metadata"].get("managedFields", [])}


@pytest.fixture
def served(make_env, control_plane, namespace, kube):
    """A local platform whose controller serves the test namespace (as the admin, unless
    given another kubeconfig)."""
    def make(pipelines: bool = False, kubeconfig: Path | None = None):
        env = make_env(pipelines=pipelines, kube=LocalKube(
            kubeconfig=kubeconfig or control_plane.kubeconfig, namespaces=[namespace],
            storageBase=SAMPLES, leaseNamespace=namespace, leaseSeconds=LEASE_S))
        return env, Cluster(kube, control_plane.kubeconfig, namespace)
    return make


def table_of(text: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of {column: value}, cut at the header's offsets."""
    header, *lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S", header)]
    # column names have single spaces inside ("DESIRED REPLICAS"), columns are 3+ apart
    starts = [s for s in starts if s == 0 or header[s - 2:s] == "  "]
    cuts = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in cuts]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, cuts, strict=True)}
            for line in lines]


def _loads(env, internal: str) -> int:
    log = env.platform.services["mlserver-0-mlserver"].log_path.read_text()
    return log.count(f"Loaded model '{internal}' successfully")


def test_seldon_samples_applied_with_kubectl_load_serve_and_show_ready(served):
    env, k = served(pipelines=True)
    k.kubectl("apply", "-f", str(SAMPLES / "quickstart.yaml"))
    for kind, name in (("Model", "iris"), ("Model", "iris2"), ("Model", "add10"),
                       ("Model", "mul10"), ("Experiment", "iris-ab"), ("Pipeline", "chain")):
        k.wait_ready(kind, name)

    # Seldon's printer columns (DESIRED REPLICAS is spec.replicas: blank in the samples)
    table = table_of(k.kubectl("get", "models"))
    assert {r["NAME"]: (r["READY"], r["AVAILABLE REPLICAS"]) for r in table} == {
        m: ("True", "1") for m in ("add10", "iris", "iris2", "mul10")}
    assert all(r["DESIRED REPLICAS"] == "" and r["AGE"] for r in table)
    assert "True" in k.kubectl("get", "pipelines")
    assert env.predict("iris") in (IRIS_CLASS, IRIS2_CLASS)  # through Envoy, the experiment
    status, body, _ = env.infer("chain", path="/v2/pipelines/chain/infer", body=json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode())
    assert status == 200 and body["outputs"][0]["data"] == [110.0], body


def test_spec_change_rolls_without_a_failed_request_and_delete_waits_for_unload(served):
    env, k = served()
    k.apply("Model", "iris", {"storageUri": "./models/iris", "requirements": ["sklearn"]})
    k.wait_ready("Model", "iris")
    assert env.predict("iris") == IRIS_CLASS

    answers, failures, stop = [], [], threading.Event()

    def load() -> None:  # light load, one request at a time, through Envoy
        while not stop.is_set():
            status, body, _ = env.infer("iris")
            (answers.append(body["outputs"][0]["data"][0]) if status == 200
             else failures.append((status, body)))
    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_until(lambda: len(answers) >= 10, 30, "version 1 under load")
        k.patch_spec("Model", "iris", {"storageUri": "./models/iris2"})
        wait_until(lambda: k.get("Model", "iris")["status"].get("modelVersion") == 2 and
                   k.condition("Model", "iris").get("status") == "True", 90, "version 2 Ready")
        wait_until(lambda: answers[-1:] == [IRIS2_CLASS], 30, "version 2 answering")
        settled = len(answers)
        wait_until(lambda: len(answers) >= settled + 10, 30, "version 2 under load")
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]
    assert answers[0] == IRIS_CLASS and set(answers[settled:]) == {IRIS2_CLASS}

    k.delete("Model", "iris")
    held = k.get("Model", "iris")  # the finalizer holds it while the scheduler unloads
    assert held is None or held["metadata"].get("deletionTimestamp")
    w_done = time.monotonic() + 60
    while (obj := k.get("Model", "iris")) is not None:
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert time.monotonic() < w_done, "the Model CR was never finalized"
        time.sleep(0.05)
    gone = env.scheduler.get("Model", "iris")  # unloaded before the CR went
    assert gone is None or gone.state == "ModelTerminated", gone
    assert env.infer("iris")[0] == 404


def test_a_refused_cr_shows_the_schedulers_reason_and_is_retried(served):
    env, k = served()
    # no server offers "tpu": the scheduler refuses the model at load (FAILED_PRECONDITION)
    k.apply("Model", "needs-tpu", {"storageUri": "./models/iris",
                                   "requirements": ["sklearn", "tpu"]})
    wait_until(lambda: k.condition("Model", "needs-tpu", "ModelReady").get("reason") ==
               "SchedulerRefused", 30, "the refusal condition")
    cond = k.condition("Model", "needs-tpu", "ModelReady")
    assert cond["status"] == "False" and "no server offers sklearn, tpu" in cond["message"], cond
    assert env.scheduler.get("Model", "needs-tpu") is None

    # the spec is fixed: the refused model is applied on a retry
    k.patch_spec("Model", "needs-tpu", {"requirements": ["sklearn"]})
    k.wait_ready("Model", "needs-tpu", timeout=120)


def test_kill_9_of_controller_and_scheduler_resyncs_without_reloading(served):
    env, k = served()
    k.apply("Model", "iris", {"storageUri": "./models/iris", "requirements": ["sklearn"]})
    k.wait_ready("Model", "iris")
    before = env.scheduler.get("Model", "iris")

    env.platform.kill("controller")  # work arrives while no controller runs
    k.apply("Model", "iris2", {"storageUri": "./models/iris2", "requirements": ["sklearn"]})
    env.platform.restart("controller")
    k.wait_ready("Model", "iris2")
    after = env.scheduler.get("Model", "iris")
    assert (after.version, after.updated_unix_ms) == (before.version, before.updated_unix_ms)

    env.platform.kill("scheduler")  # a spec change while the scheduler is down
    k.patch_spec("Model", "iris2", {"storageUri": "./models/iris"})
    env.platform.restart("scheduler")
    wait_until(lambda: k.get("Model", "iris2")["status"].get("modelVersion") == 2 and
               k.condition("Model", "iris2").get("status") == "True", 90,
               "the change applied after the scheduler's restart, status caught up")
    assert env.predict("iris2") == IRIS_CLASS
    assert env.scheduler.get("Model", "iris").version == 1
    assert _loads(env, "iris_1") == 1  # nothing reloaded by either restart
    assert k.condition("Model", "iris").get("status") == "True"


def _holder(kube, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(kube).read_namespaced_lease("core2-controller", namespace)
    return lease.spec.holder_identity


def test_two_replicas_only_the_leader_acts_and_a_kill_hands_over(served, kube, control_plane,
                                                                 tmp_path):
    env, k = served()
    wait_until(lambda: _holder(kube, k.ns) is not None, 30, "a leader")
    standby = Service("controller-b", python_module(
        "runtime.controller", "--scheduler", env.platform.scheduler_address,
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", k.ns,
        "--lease-namespace", k.ns, "--identity", "standby", "--field-manager", "standby",
        "--lease-duration", str(LEASE_S), "--renew-deadline", "3", "--retry-period", "1",
        "--health-port", str(free_port()), "--storage-base", str(SAMPLES)), tmp_path).start()
    try:
        k.apply("Model", "iris", {"storageUri": "./models/iris", "requirements": ["sklearn"]})
        k.wait_ready("Model", "iris")
        assert _holder(kube, k.ns) != "standby"
        assert "standby" not in k.managers("Model", "iris")  # the follower wrote nothing
        assert "core2-controller" in k.managers("Model", "iris")

        env.platform.kill("controller")
        killed = time.monotonic()
        wait_until(lambda: _holder(kube, k.ns) == "standby", LEASE_S + 6, "the handover")
        handover = time.monotonic() - killed
        assert handover <= LEASE_S + 2, handover  # the lease time plus one retry
        k.apply("Model", "iris2", {"storageUri": "./models/iris2", "requirements": ["sklearn"]})
        k.wait_ready("Model", "iris2")
        assert "standby" in k.managers("Model", "iris2")
    finally:
        standby.stop()


def test_the_platforms_rbac_is_all_the_controller_needs(served, kube, control_plane,
                                                         namespace, tmp_path):
    """The ServiceAccount, Role and RoleBinding components.controller renders (and its
    Deployment, stored and validated) on the real API server; the controller runs with that
    account's token and does its whole job: Lease, finalizer, status, delete."""
    for obj in controller.render(namespace, "core2:test", "IfNotPresent",
                                 controller.DEFAULT_RESOURCES):
        utils.create_from_dict(kube, obj, namespace=namespace)
    token = client.CoreV1Api(kube).create_namespaced_service_account_token(
        controller.ACCOUNT, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    kubeconfig = tmp_path / "controller.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    env, k = served(kubeconfig=kubeconfig)
    k.apply("Model", "iris", {"storageUri": "./models/iris", "requirements": ["sklearn"]})
    k.wait_ready("Model", "iris")
    assert env.predict("iris") == IRIS_CLASS
    assert _holder(kube, namespace) is not None
    k.delete("Model", "iris")
    wait_until(lambda: k.get("Model", "iris") is None, 60, "the Model CR finalized")
    assert "forbidden" not in env.platform.services["controller"].log_path.read_text().lower()


def _statefulset(name: str, labels: dict) -> dict:
    pod = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": pod},
                     "template": {"metadata": {"labels": pod}, "spec": {"containers": [
                         {"name": "server", "image": "core2:test"}]}}}}


def _scaling_controller(env, control_plane, namespace: str, tmp_path) -> Service:
    """A controller serving `namespace` with `env`'s scheduler that scales StatefulSets."""
    return Service("controller", python_module(
        "runtime.controller", "--scheduler", env.platform.scheduler_address,
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace,
        "--scale-statefulsets"), tmp_path).start()


def test_a_server_cr_scales_its_statefulset_unless_pulumi_owns_it(make_env, kube, namespace,
                                                                  control_plane, tmp_path):
    env = make_env()
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_stateful_set(namespace, _statefulset("plain", {}))
    apps.create_namespaced_stateful_set(namespace, _statefulset(
        "owned", {"app.kubernetes.io/managed-by": "pulumi"}))
    ctl = _scaling_controller(env, control_plane, namespace, tmp_path)
    try:
        k = Cluster(kube, control_plane.kubeconfig, namespace)
        k.apply("Server", "plain", {"replicas": 3})
        k.apply("Server", "owned", {"replicas": 2})
        wait_until(lambda: apps.read_namespaced_stateful_set("plain", namespace).spec.replicas
                   == 3, 30, "the plain StatefulSet scaled to 3", ctl)
        wait_until(lambda: k.condition("Server", "owned", "ReplicasScaled").get("message"),
                   30, "the owned Server's scaling condition", ctl)
        assert "owned by Pulumi" in k.condition("Server", "owned", "ReplicasScaled")["message"]
        assert apps.read_namespaced_stateful_set("owned", namespace).spec.replicas == 1
        # the scheduler knows both servers' specs (no agent connected: not Ready); the status
        # comes by its own watch, not with the scaling above, so it may come a little later
        assert env.scheduler.get("Server", "plain") is not None
        wait_until(lambda: k.condition("Server", "plain", "ServerReady").get("status")
                   == "False", 30, "the plain Server's ServerReady condition (False)", ctl)
    finally:
        ctl.stop()


def test_an_autoscaled_server_cr_gets_the_schedulers_replica_count(make_env, kube, namespace,
                                                                    control_plane, tmp_path):
    """A Server with minReplicas..maxReplicas: its StatefulSet follows the scheduler's server
    autoscaler (here its floor, 2), not spec.replicas (1)."""
    env = make_env(autoscaling=LocalAutoscaling(servers=True))
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_stateful_set(namespace, _statefulset("scaled", {}))
    ctl = _scaling_controller(env, control_plane, namespace, tmp_path)
    try:
        k = Cluster(kube, control_plane.kubeconfig, namespace)
        k.apply("Server", "scaled", {"replicas": 1, "minReplicas": 2, "maxReplicas": 4})
        wait_until(lambda: apps.read_namespaced_stateful_set("scaled", namespace).spec.replicas
                   == 2, 30, "the StatefulSet scaled to the autoscaler's 2", ctl)
        detail = json.loads(env.scheduler.get("Server", "scaled").detail_json)
        assert detail["autoscaling"]["replicas"] == 2
    finally:
        ctl.stop()


def test_core2_up_with_kube_supervises_the_controller(namespace, control_plane, kube, tmp_path,
                                                      sample_models):
    """`core2 up` with the `kube` config key (what --kube sets) runs the controller as a
    supervised service: it serves kubectl's CRs, is restarted after a kill -9, and `core2
    down` stops it."""
    from tests.conftest import free_ports
    from tests.test_cli import core2

    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({
        "ports": free_ports().model_dump(), "pipelines": False,
        "supervision": {"backoffSeconds": 0.2, "probeIntervalSeconds": 0.5},
        "kube": {"kubeconfig": str(control_plane.kubeconfig), "namespaces": [namespace],
                 "storageBase": str(SAMPLES), "leaseNamespace": namespace,
                 "leaseSeconds": LEASE_S}}))
    run_dir = tmp_path / "run"
    up = core2(run_dir, "up", "--detach", "-c", str(config))
    state = read_state(run_dir) or {}
    try:
        assert up.returncode == 0, up.stderr
        k = Cluster(kube, control_plane.kubeconfig, namespace)
        k.kubectl("apply", "-f", str(SAMPLES / "iris.yaml"))
        k.wait_ready("Model", "iris")

        first = state["pids"]["controller"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: (read_state(run_dir) or {}).get("pids", {}).get("controller")
                   not in (None, first), 30, "the supervisor to restart the controller")
        k.kubectl("apply", "-f", str(SAMPLES / "iris2.yaml"))
        k.wait_ready("Model", "iris2")

        def controller_status() -> dict:
            return json.loads(core2(run_dir, "status", "--json").stdout)["services"][
                "controller"]
        wait_until(lambda: controller_status()["state"] == "Ready", 30,
                   "`core2 status` to show the controller Ready")
        assert controller_status()["restarts"] == 1
    finally:
        down = core2(run_dir, "down")
    assert down.returncode == 0
    assert not any(pid_alive(p) for p in (read_state(run_dir) or state)["pids"].values())


def test_a_pulumi_stacks_crs_are_served_by_the_controller(stack_dir, cluster, make_env,
                                                          control_plane, kube, seldon_crds):
    """`pulumi up` of a cluster stack (the real engine) creates the Model CR; a controller on
    the same API server serves it; `pulumi destroy` deletes it and the model is unloaded
    before the CR goes."""
    sd = stack_dir("staging")
    ns = f"stack-ctl-{int(time.time()) % 100000}"
    sd.values.update({
        "core2:namespace": ns, "core2:strimziInstallOperator": False,
        "core2:models": [{"name": "iris", "spec": {"storageUri": "models/iris",
                                                    "requirements": ["sklearn"]}}],
        "core2:pipelines": [], "core2:experiments": []})
    sd.save()
    sd.run("up").ok()
    env = make_env(kube=LocalKube(kubeconfig=control_plane.kubeconfig, namespaces=[ns],
                                  storageBase=SAMPLES, leaseNamespace=ns,
                                  leaseSeconds=LEASE_S))
    k = Cluster(kube, control_plane.kubeconfig, ns)
    k.wait_ready("Model", "iris")
    assert env.predict("iris") == IRIS_CLASS
    sd.run("destroy").ok()
    wait_until(lambda: k.get("Model", "iris") is None, 90, "the Model CR to go")
    assert env.scheduler.get("Model", "iris") is None or \
        env.scheduler.get("Model", "iris").state == "ModelTerminated"


def test_a_pulumi_deployed_autoscaled_server_follows_the_schedulers_count(
        stack_dir, cluster, make_env, control_plane, kube, seldon_crds, tmp_path):
    """components.Server with `autoscaling` (the real engine): Pulumi creates the StatefulSet
    at minReplicas and a Server CR with the bounds; the controller applies the CR to the
    scheduler and sets the StatefulSet to the scheduler's count; a later `pulumi up` that
    changes the pod template and the bounds leaves that count alone, and a preview shows
    nothing to do."""
    from tests.cluster.test_stacks import changes

    sd = stack_dir("staging")
    ns = f"stack-as-{int(time.time()) % 100000}"
    server = {"name": "auto", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}
    sd.values.update({"core2:namespace": ns, "core2:strimziInstallOperator": False,
                      "core2:servers": [server], "core2:models": [], "core2:pipelines": [],
                      "core2:experiments": []})
    sd.save()
    sd.run("up").ok()
    apps = client.AppsV1Api(kube)
    assert apps.read_namespaced_stateful_set("auto", ns).spec.replicas == 2

    env = make_env(autoscaling=LocalAutoscaling(servers=True))
    k = Cluster(kube, control_plane.kubeconfig, ns)
    ctl = _scaling_controller(env, control_plane, ns, tmp_path)
    try:
        # the floor goes up: the scheduler's count follows (no agent runs: it is the floor)
        # and the controller scales the StatefulSet, which Pulumi does not touch
        server["autoscaling"]["minReplicas"] = 3
        sd.save()
        assert changes(sd.run("up").ok().output).get("update") == 1  # the Server CR only
        wait_until(lambda: apps.read_namespaced_stateful_set("auto", ns).spec.replicas == 3,
                   30, "the StatefulSet scaled to the scheduler's 3", ctl)
        detail = json.loads(env.scheduler.get("Server", "auto").detail_json)
        assert detail["autoscaling"]["replicas"] == 3 and \
            detail["autoscaling"]["maxReplicas"] == 4

        # a pod-template change (server-side apply) keeps the scheduler's count, also where
        # Pulumi's own would differ: minReplicas back to 2 (the scheduler scales in only by
        # draining a running replica, so it stays at 3)
        server.update(memory="3Gi", autoscaling={"minReplicas": 2, "maxReplicas": 4})
        sd.save()
        sd.run("up").ok()
        sts = apps.read_namespaced_stateful_set("auto", ns)
        agent = sts.spec.template.spec.containers[1]
        assert agent.args[agent.args.index("--memory") + 1] == "3Gi"
        assert sts.spec.replicas == 3
        assert set(changes(sd.run("preview").ok().output)) == {"same"}

        sd.run("destroy").ok()  # the controller finalizes the Server CR meanwhile
        wait_until(lambda: k.get("Server", "auto") is None, 60, "the Server CR to go", ctl)
    finally:
        if k.get("Server", "auto") is not None:  # a failure above: its finalizer needs ctl
            sd.run("destroy")
        ctl.stop()
