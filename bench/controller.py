"""The controller's costs on a real kube-apiserver + etcd (tests/cluster's control plane) with a
real local runtime: apply of a Model CR to Ready (median of --models; beside it, the same
model applied straight to the scheduler's API, in the same run), delete to the CR gone, and
the time a restarted controller takes to resync --crs CRs (list, diff each against the
scheduler, write nothing).

    .venv/bin/python scripts/tools            # once: etcd, kube-apiserver, kubectl
    .venv/bin/python bench/controller.py [--models 20] [--crs 1000]
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runtime.client import SchedulerClient
from runtime.controller import crds
from runtime.local.config import LocalConfig, LocalKube, Ports
from runtime.local.platform import Platform
from tests.cluster.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
IRIS = {"storageUri": "./models/iris", "requirements": ["sklearn"], "memory": "100Ki"}


def _ready(custom, name: str) -> bool:
    obj = custom.get_namespaced_custom_object(crds.GROUP, crds.VERSION, NS, "models", name)
    return any(c["type"] == "ModelReady" and c["status"] == "True"
               for c in obj.get("status", {}).get("conditions", []))


def _gone(custom, name: str) -> bool:
    try:
        custom.get_namespaced_custom_object(crds.GROUP, crds.VERSION, NS, "models", name)
        return False
    except ApiException as e:
        return e.status == 404


def _until(check, timeout: float = 120, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(getattr(check, "__name__", "condition"))
        time.sleep(interval)


def _body(name: str, spec: dict) -> dict:
    return {"apiVersion": f"{crds.GROUP}/{crds.VERSION}", "kind": "Model",
            "metadata": {"name": name}, "spec": spec}


def apply_to_ready(custom, scheduler: SchedulerClient, n: int) -> tuple[list, list]:
    """Seconds from create to Ready: through a CR, and straight to the scheduler."""
    via_cr, direct = [], []
    for i in range(n):
        t0 = time.perf_counter()
        custom.create_namespaced_custom_object(crds.GROUP, crds.VERSION, NS, "models",
                                               _body(f"cr{i}", IRIS))
        _until(lambda i=i: _ready(custom, f"cr{i}"))
        via_cr.append(time.perf_counter() - t0)

        spec = {**IRIS, "storageUri": str(ROOT / "samples" / "models" / "iris")}
        t0 = time.perf_counter()
        scheduler.apply("Model", f"direct{i}", json.dumps(spec))
        _until(lambda i=i: getattr(scheduler.get("Model", f"direct{i}"), "ready", False))
        direct.append(time.perf_counter() - t0)
    return via_cr, direct


def delete_to_gone(custom, n: int) -> list[float]:
    """Seconds from deleting a Model CR to the CR gone (after the scheduler's unload)."""
    took = []
    for i in range(n):
        t0 = time.perf_counter()
        custom.delete_namespaced_custom_object(crds.GROUP, crds.VERSION, NS, "models", f"cr{i}")
        _until(lambda i=i: _gone(custom, f"cr{i}"))
        took.append(time.perf_counter() - t0)
    return took


def _state(platform: Platform) -> dict:
    url = f"http://127.0.0.1:{platform.ports['controllerHealth']}/state"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return {}


def resync(custom, platform: Platform, n: int) -> tuple[float, float, float]:
    """(first sync of n new CRs, resync of them by a restarted controller from its process
    start, and from its taking the Lease), in seconds. The CRs are Models at replicas 0: the
    scheduler holds them, no server loads them."""
    t0 = time.perf_counter()
    for i in range(n):
        custom.create_namespaced_custom_object(crds.GROUP, crds.VERSION, NS, "models",
                                               _body(f"many{i}", {**IRIS, "replicas": 0}))

    def all_observed() -> bool:
        items = custom.list_namespaced_custom_object(crds.GROUP, crds.VERSION, NS,
                                                     "models")["items"]
        return sum(1 for o in items if o.get("status", {}).get("observedGeneration")) >= n
    _until(all_observed, timeout=1800, interval=0.5)
    first = time.perf_counter() - t0

    platform.services["controller"].stop()  # SIGTERM: the Lease is released
    t0 = time.perf_counter()
    platform.services["controller"].start()

    _until(lambda: _state(platform).get("resyncSeconds") is not None, timeout=600,
           interval=0.02)
    return first, time.perf_counter() - t0, _state(platform)["resyncSeconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--crs", type=int, default=1000)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="core2-bench-controller-"))
    plane = ControlPlane(work / "plane").start()
    platform = None
    try:
        kube = config.new_client_from_config(str(plane.kubeconfig))
        ext = client.ApiextensionsV1Api(kube)
        for definition in crds.all_crds():
            ext.create_custom_resource_definition(definition)
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": NS}})
        _until(lambda: all(any(c.type == "Established" and c.status == "True" for c in
                               ext.read_custom_resource_definition(
                                   d["metadata"]["name"]).status.conditions or [])
                           for d in crds.all_crds()), timeout=30, interval=0.1)
        cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=False,
                          kube=LocalKube(kubeconfig=plane.kubeconfig, namespaces=[NS],
                                         storageBase=ROOT / "samples", leaseNamespace=NS))
        platform = Platform(work / "run", cfg).start()
        custom = client.CustomObjectsApi(kube)
        scheduler = SchedulerClient(platform.scheduler_address)

        via_cr, direct = apply_to_ready(custom, scheduler, a.models)
        cr_ms, direct_ms = (statistics.median(x) * 1000 for x in (via_cr, direct))
        print(f"apply to Ready, median of {a.models}: Model CR {cr_ms:.0f} ms, "
              f"scheduler API {direct_ms:.0f} ms (CR/API {cr_ms / direct_ms:.2f}x)")
        gone_ms = statistics.median(delete_to_gone(custom, a.models)) * 1000
        print(f"delete to CR gone (unloaded first), median of {a.models}: {gone_ms:.0f} ms")
        first, again, leading = resync(custom, platform, a.crs)
        print(f"{a.crs} Model CRs: first sync {first:.1f} s ({a.crs / first:.0f}/s); "
              f"resync after a controller restart {again:.2f} s from its process start, "
              f"{leading:.2f} s from taking the Lease ({a.crs / leading:.0f} CRs/s)")
    finally:
        if platform is not None:
            platform.stop()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
