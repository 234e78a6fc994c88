"""NetworkPolicies: deny all ingress to core2 pods, then admit only what each one needs.

Envoy is the only entry point from outside; the scheduler takes xDS from Envoy, the API from
the dataflow services and the controller, and agent streams from server pods; servers take
traffic from Envoy; Prometheus (in the configured monitoring namespace) may scrape metrics ports.
The policies restrict ingress only: the engine's model calls to Envoy (port 9000, open to
every source), and every client's connections to Kafka, are not limited here.
"""

from components.controller import NAME as CONTROLLER
from components.dataflow import ENGINE, GATEWAY, GATEWAY_GRPC, GATEWAY_HTTP, SERVICES
from components.dataflow import METRICS_PORT as DATAFLOW_METRICS
from components.envoy import HEALTH_PORT, LISTEN_PORT
from components.envoy import NAME as ENVOY
from components.k8s import PART_OF, metadata, selector
from components.scheduler import (
    AGENT_PORT,
    API_PORT,
    FEEDBACK_GRPC_PORT,
    FEEDBACK_HTTP_PORT,
    METRICS_PORT,
    XDS_PORT,
)
from components.scheduler import NAME as SCHEDULER

SERVER_ROLE = {"core2.io/role": "server"}
SERVER_PORTS = {"http": 9500, "grpc": 9501, "server-metrics": 9502, "agent-http": 9001,
                "agent-grpc": 9003, "agent-metrics": 9006}


def _policy(name: str, namespace: str, pods: dict, rules: list[dict]) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(name, namespace, "network-policy"),
            "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"],
                     "ingress": rules}}


def _ports(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def render(namespace: str, monitoring_namespace: str | None) -> list[dict]:
    envoy = {"podSelector": {"matchLabels": selector(ENVOY)}}
    servers = {"podSelector": {"matchLabels": SERVER_ROLE}}
    controller = {"podSelector": {"matchLabels": selector(CONTROLLER)}}
    dataflow = {"podSelector": {"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": sorted(SERVICES)}]}}
    monitoring = ([{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": monitoring_namespace}}}] if monitoring_namespace else [])

    def scrape(*ports: int) -> list[dict]:
        return [{"from": monitoring, "ports": _ports(*ports)}] if monitoring else []

    return [
        _policy("core2-default-deny", namespace, {"app.kubernetes.io/part-of": PART_OF}, []),
        _policy("core2-scheduler", namespace, selector(SCHEDULER), [
            {"from": [envoy], "ports": _ports(XDS_PORT, FEEDBACK_HTTP_PORT, FEEDBACK_GRPC_PORT)},
            {"from": [dataflow, controller], "ports": _ports(API_PORT)},
            {"from": [servers], "ports": _ports(AGENT_PORT)},
            *scrape(METRICS_PORT),
        ]),
        # the ingress itself: open to every source the Service lets in
        _policy("core2-envoy", namespace, selector(ENVOY), [
            {"ports": _ports(LISTEN_PORT)},
            *scrape(HEALTH_PORT),  # /stats/prometheus; the admin port is loopback-only
        ]),
        _policy("core2-pipelinegateway", namespace, selector(GATEWAY), [
            {"from": [envoy], "ports": _ports(GATEWAY_HTTP, GATEWAY_GRPC)},
            *scrape(GATEWAY_HTTP),
        ]),
        # the engine takes no traffic but Prometheus' scrapes: it only calls out (Kafka, the
        # scheduler, Envoy)
        *([_policy("core2-dataflow-metrics", namespace, selector(ENGINE),
                   scrape(DATAFLOW_METRICS))] if monitoring else []),
        _policy("core2-servers", namespace, SERVER_ROLE, [
            {"from": [envoy], "ports": _ports(SERVER_PORTS["http"], SERVER_PORTS["grpc"],
                                              SERVER_PORTS["agent-http"],
                                              SERVER_PORTS["agent-grpc"])},
            *scrape(SERVER_PORTS["server-metrics"], SERVER_PORTS["agent-metrics"]),
        ]),
    ]
