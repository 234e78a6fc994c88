"""Fixtures for the cluster path with real engines: a kube-apiserver + etcd control plane, and
stack folders the real Pulumi engine plans and applies against it."""

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runtime.procs import wait_until
from tests.cluster.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
STRIMZI_CRDS = ROOT / ".tools" / "strimzi-crds"
ENGINE_TIMEOUT = 900  # one preview/up/destroy on a slow machine


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane) -> client.ApiClient:
    return config.new_client_from_config(str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def cluster(kube):
    """What a platform team provides before any stack runs: Strimzi's CRDs (the stacks do not
    install cluster-wide objects unless asked) and the monitoring namespaces."""
    ext = client.ApiextensionsV1Api(kube)
    for path in sorted(STRIMZI_CRDS.glob("*.yaml")):
        try:
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        except ApiException as e:
            if e.status != 409:
                raise
    core = client.CoreV1Api(kube)
    for ns in ("monitoring", "observability"):
        try:
            core.create_namespace({"metadata": {"name": ns}})
        except ApiException as e:
            if e.status != 409:
                raise
    return kube


@dataclass
class EngineRun:
    returncode: int
    output: str

    def ok(self) -> "EngineRun":
        assert self.returncode == 0, self.output[-6000:]
        return self


class StackDir:
    """A copy of Pulumi.yaml and one stack's config, pointed at the test control plane; edit
    `values` and `save()` as a pull request would edit the stack file."""

    def __init__(self, workdir: Path, stack: str, control_plane: ControlPlane):
        self.dir, self.stack = workdir, stack
        (workdir / "stacks").mkdir(parents=True)
        shutil.copy(ROOT / "Pulumi.yaml", workdir / "Pulumi.yaml")
        (workdir / "infra").symlink_to(ROOT / "infra")  # the project's `main`
        self.file = workdir / "stacks" / f"Pulumi.{stack}.yaml"
        self.data = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
        self.values.update({
            "core2:kubeconfig": str(control_plane.kubeconfig), "core2:context": "envtest",
            # no kubelet: objects are stored and validated, pods never run
            "core2:skipAwait": True,
        })
        self.save()

    @property
    def values(self) -> dict:
        return self.data["config"]

    def save(self) -> None:
        self.file.write_text(yaml.safe_dump(self.data, sort_keys=False))

    def run(self, op: str, *flags: str) -> EngineRun:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.cluster.engine", str(self.dir), self.stack, op,
             *flags], cwd=ROOT, capture_output=True, text=True, timeout=ENGINE_TIMEOUT)
        return EngineRun(proc.returncode, proc.stdout + proc.stderr)


def namespace_exists(kube, namespace: str) -> bool:
    try:
        client.CoreV1Api(kube).read_namespace(namespace)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.fixture
def stack_dir(tmp_path, control_plane, kube):
    made: list[StackDir] = []

    def make(stack: str) -> StackDir:
        made.append(StackDir(tmp_path / f"{stack}-{len(made)}", stack, control_plane))
        return made[-1]

    yield make
    for s in made:  # never leave a stack's objects behind for the next test
        if (s.dir / "state").exists():
            s.run("destroy")
            namespace = s.values.get("core2:namespace", "core2")
            if s.values.get("core2:target", "kubernetes") == "kubernetes":
                # a namespace still terminating would refuse the next stack's objects
                wait_until(lambda ns=namespace: not namespace_exists(kube, ns), 120,
                           f"namespace {namespace} to be deleted")
