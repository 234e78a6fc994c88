"""Security a real cluster needs: a token on production schedulers (enforced by policy),
Envoy's admin API off the network, appProtocol that says what the listener speaks, and the
same restricted container context for Triton as for every other container."""

import json

import pytest

from components import envoy
from components.k8s import RESTRICTED_CONTAINER
from infra.config import stack_values
from infra.policy.rules import check_all, production_scheduler_token
from tests.infra.harness import STACKS, render_stack, render_values

PRODUCTION = ("prod-aws", "prod-gcp", "onprem")


def values(stack: str) -> dict:
    return json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))


def resources(render) -> list[tuple[str, dict]]:
    return [(r.type, r.inputs) for r in render.resources]


def by_kind(render, kind: str) -> dict[str, dict]:
    return {o.manifest["metadata"]["name"]: o.manifest for o in render.kubernetes_objects()
            if o.manifest["kind"] == kind}


@pytest.mark.parametrize("stack", PRODUCTION)
def test_production_stacks_set_a_scheduler_token(stack):
    assert values(stack)["environment"] == "production"
    assert production_scheduler_token(resources(render_stack(stack))) == []


def test_a_production_stack_without_a_scheduler_token_is_blocked():
    cfg = {k: v for k, v in values("prod-gcp").items() if k != "schedulerTokenSecret"}
    violations = check_all(resources(render_values("prod-gcp", cfg)))
    (message,) = violations["core2-production-scheduler-token"]
    assert "core2/scheduler" in message and "schedulerTokenSecret" in message
    # staging may run without one
    staging = {k: v for k, v in values("staging").items() if k != "schedulerTokenSecret"}
    assert production_scheduler_token(resources(render_values("staging", staging))) == []


def test_envoy_admin_listens_on_loopback_and_is_neither_probed_nor_exposed():
    render = render_stack("prod-aws")
    (cm,) = [c for n, c in by_kind(render, "ConfigMap").items()
             if n.startswith("envoy-bootstrap-")]
    boot = json.loads(cm["data"]["envoy.json"])
    assert boot["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": envoy.ADMIN_PORT}
    (c,) = by_kind(render, "Deployment")["envoy"]["spec"]["template"]["spec"]["containers"]
    assert envoy.ADMIN_PORT not in {p["containerPort"] for p in c["ports"]}
    probed = {(p.get("httpGet") or p.get("tcpSocket"))["port"]
              for p in (c["readinessProbe"], c["livenessProbe"])}
    assert envoy.ADMIN_PORT not in probed
    # the health listener proxies /ready and the Prometheus stats only
    health = next(x for x in boot["static_resources"]["listeners"]
                  if x["address"]["socket_address"]["port_value"] == envoy.HEALTH_PORT)
    routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"][0]["routes"]
    assert [r["match"] for r in routes if "route" in r] == [
        {"path": "/ready"}, {"path": "/stats/prometheus"}]
    policy = by_kind(render, "NetworkPolicy")["core2-envoy"]["spec"]["ingress"]
    assert {p["port"] for rule in policy for p in rule["ports"]} == {
        envoy.LISTEN_PORT, envoy.HEALTH_PORT}


@pytest.mark.parametrize("stack, protocol", [("prod-aws", "https"),
                                             ("staging", "kubernetes.io/h2c")])
def test_envoy_service_app_protocol_follows_tls(stack, protocol):
    render = render_stack(stack)
    assert bool(render.config.envoyTlsSecret) == (protocol == "https")
    (port,) = by_kind(render, "Service")["envoy"]["spec"]["ports"]
    assert port["appProtocol"] == protocol


def test_triton_runs_with_the_restricted_context_of_every_other_container():
    render = render_stack("prod-aws")
    pod = by_kind(render, "StatefulSet")["triton-gpu"]["spec"]["template"]["spec"]
    triton = next(c for c in pod["containers"] if c["name"] == "triton")
    assert triton["securityContext"] == RESTRICTED_CONTAINER
    # a read-only root needs a writable /tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in triton["volumeMounts"]


def test_a_triton_servers_agent_lays_out_and_proxies_for_triton():
    """Triton has no name hook: its agent writes Triton's layout and Envoy reaches its models
    through the agent's proxy (runtime.agent.proxy), which the agent's --server-kind selects."""
    pods = {name: s["spec"]["template"]["spec"]
            for name, s in by_kind(render_stack("prod-aws"), "StatefulSet").items()}
    kinds = {name: next(c for c in pod["containers"] if c["name"] == "agent")["args"]
             for name, pod in pods.items() if name in ("triton-gpu", "mlserver")}
    assert kinds["triton-gpu"][kinds["triton-gpu"].index("--server-kind") + 1] == "triton"
    assert kinds["mlserver"][kinds["mlserver"].index("--server-kind") + 1] == "mlserver"
