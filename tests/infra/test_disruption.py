"""Disruption on a real cluster: node drains take one pod of a replicated workload at a time,
replicas spread over zones and nodes, every service is probed, and Envoy drains on shutdown."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from components import envoy, envoy_bootstrap, server
from infra.config import ServerEntry
from runtime.envoy import envoy_binary
from tests.infra.harness import render_stack

RENDERS: dict = {}


def rendered(stack: str):
    if stack not in RENDERS:
        RENDERS[stack] = render_stack(stack)
    return RENDERS[stack]


def objects(render, kind: str) -> dict[str, dict]:
    return {o.manifest["metadata"]["name"]: o.manifest for o in render.kubernetes_objects()
            if o.manifest["kind"] == kind}


def workloads(render) -> dict[str, dict]:
    return {**objects(render, "Deployment"), **objects(render, "StatefulSet")}


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_replicated_servers_and_dataflow_get_a_one_at_a_time_disruption_budget():
    render = rendered("prod-aws")  # mlserver (HPA), triton-gpu x2, dataflow x2, envoy x3
    budgets = objects(render, "PodDisruptionBudget")
    assert set(budgets) == {"mlserver", "triton-gpu", "engine", "pipelinegateway", "envoy"}
    loads = workloads(render)
    for name, pdb in budgets.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        pod_labels = loads[name]["spec"]["template"]["metadata"]["labels"]
        assert matches(pdb["spec"]["selector"], pod_labels), name
        # it selects only its own workload's pods
        others = [n for n, w in loads.items() if n != name and matches(
            pdb["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        assert others == [], name
    # a single replica gets none: a budget would block every node drain forever
    assert set(objects(rendered("staging"), "PodDisruptionBudget")) == set()


def test_replicated_workloads_spread_over_zones_and_nodes():
    for name, w in workloads(rendered("prod-aws")).items():
        pod = w["spec"]["template"]
        constraints = pod["spec"].get("topologySpreadConstraints")
        if name == "scheduler":  # one replica by design
            assert constraints is None
            continue
        assert {c["topologyKey"] for c in constraints} == {
            "topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for c in constraints:
            assert matches(c["labelSelector"], pod["metadata"]["labels"]), name
            assert c["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-zone cluster still runs


def test_every_service_container_is_probed_and_model_servers_get_startup_probes():
    for stack in ("prod-aws", "staging"):
        for name, w in workloads(rendered(stack)).items():
            for c in w["spec"]["template"]["spec"]["containers"]:
                assert c.get("livenessProbe") and c.get("readinessProbe"), (stack, name, c["name"])
                ports = {p["containerPort"] for p in c.get("ports", [])}
                for probe in (c["livenessProbe"], c["readinessProbe"]):
                    port = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
                    assert port in ports, (name, c["name"], port)  # a port it listens on
    (triton,) = [c for c in workloads(rendered("prod-aws"))["triton-gpu"]["spec"]["template"][
        "spec"]["containers"] if c["name"] == "triton"]
    (mlserver,) = [c for c in workloads(rendered("staging"))["mlserver"]["spec"]["template"][
        "spec"]["containers"] if c["name"] == "mlserver"]
    for c in (triton, mlserver):
        startup = c["startupProbe"]
        assert startup["httpGet"]["path"] == "/v2/health/live"
        # liveness only starts after startup: a slow model server is not killed while loading
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_envoy_fails_health_checks_then_drains_before_it_stops():
    dep = workloads(rendered("prod-aws"))["envoy"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    assert "/healthcheck/fail" in command[2] and f"/127.0.0.1/{envoy.ADMIN_PORT}" in command[2]
    assert command[2].endswith(f"sleep {envoy.DRAIN_SECONDS}")
    assert pod["terminationGracePeriodSeconds"] > envoy.DRAIN_SECONDS
    assert c["readinessProbe"]["httpGet"] == {"port": envoy.HEALTH_PORT, "path": "/ready"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@pytest.mark.timeout(120)
def test_real_envoy_readiness_turns_503_after_the_prestop_hook(tmp_path):
    """The rendered bootstrap and preStop command, run for real: /ready on the health
    listener is 200, the preStop hook (through the loopback admin) turns it to 503, and the
    health listener exposes nothing else of the admin API."""
    listen, admin, health, xds = (_free_port() for _ in range(4))
    boot = envoy_bootstrap.bootstrap("127.0.0.1", xds, listen, admin, health_port=health)
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(boot))
    proc = subprocess.Popen([envoy_binary(), "-c", str(path), "--base-id",
                             str(health), "-l", "error"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ready = f"http://127.0.0.1:{health}/ready"
    try:
        deadline = time.monotonic() + 90  # the first xDS fetch times out after 15 s
        while _status(ready) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "Envoy never ready"
            time.sleep(0.5)
        assert _status(f"http://127.0.0.1:{health}/quitquitquit") == 404
        assert _status(f"http://127.0.0.1:{health}/stats/prometheus") == 200
        hook = envoy.prestop_command(admin, drain=0)
        subprocess.run(hook, check=True, timeout=30)
        assert _status(ready) == 503
        assert proc.poll() is None  # still serving in-flight requests while it drains
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_server_pods_drain_their_models_before_they_stop():
    """The agent's preStop hook runs `python -m runtime.agent drain` for its own replica, the
    model server's waits for the drain to end, and the grace period covers both."""
    sets = objects(rendered("prod-aws"), "StatefulSet")
    for name in ("mlserver", "triton-gpu"):
        pod = sets[name]["spec"]["template"]["spec"]
        agent, model_server = sorted(pod["containers"], key=lambda c: c["name"] != "agent")
        hook = agent["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[:2] == ["sh", "-c"]
        assert hook[2].startswith("exec python -m runtime.agent drain ")
        assert f"--server-name {name} " in hook[2] and '--replica-idx "$REPLICA_IDX"' in hook[2]
        assert "--timeout 120 " in hook[2] and f"--done-file {server.DRAIN_DONE}" in hook[2]
        # the shell reads the index from the env the agent gets from the pod-index label
        [idx] = [e for e in agent["env"] if e["name"] == "REPLICA_IDX"]
        assert idx["valueFrom"]["fieldRef"]["fieldPath"].endswith("pod-index']")
        wait = model_server["lifecycle"]["preStop"]["exec"]["command"]
        assert server.DRAIN_DONE in wait[2] and "-lt 120" in wait[2]
        assert pod["terminationGracePeriodSeconds"] == 120 + server.GRACE_SECONDS


def test_drain_seconds_is_per_server_and_checked():
    args = server.ServerArgs(name="slow", namespace="core2", image="img", drain_seconds=600)
    sts = next(m for m in server.render(args) if m["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 600 + server.GRACE_SECONDS
    assert "--timeout 600 " in server.drain_command(args)[2]
    with pytest.raises(ValueError, match=r"servers\[slow\]\.drainSeconds: 0 must be at least"):
        server.render(server.ServerArgs(name="slow", namespace="core2", image="img",
                                        drain_seconds=0))
    with pytest.raises(ValidationError, match="drainSeconds"):
        ServerEntry(name="slow", drainSeconds=0)


def test_the_model_server_prestop_waits_for_the_drain_then_returns(tmp_path):
    """The rendered wait, run by a real shell: it blocks until the done file appears."""
    done = tmp_path / "drained"
    args = server.ServerArgs(name="s", namespace="core2", image="img", drain_seconds=30)
    script = server.wait_for_drain_command(args)[2].replace(server.DRAIN_DONE, str(done))
    proc = subprocess.Popen(["sh", "-c", script])
    try:
        # still waiting: nothing has signalled the drain's end
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)
        done.touch()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
