"""Pipeline dataflow: the engine and the pipeline gateway, both Kafka clients.

The engine runs the pipelines' steps (joins, triggers) and calls each step's model itself
through Envoy's Service (it still writes the model topics `core2 pipeline inspect` reads);
the pipeline gateway takes pipeline requests from Envoy and answers them from the output topic.
"""

from typing import Any

from components.envoy import LISTEN_PORT as ENVOY_PORT
from components.envoy import NAME as ENVOY
from components.k8s import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Resources,
    disruption_budget,
    http_probe,
    metadata,
    scrape_annotations,
    selector,
    spread,
    tmp_volume,
)
from components.scheduler import API_PORT
from components.scheduler import NAME as SCHEDULER
from components.secrets import ENVOY_CA_DIR, ENVOY_CA_ENV, envoy_tls_volume
from runtime.kafka import FETCH_WAIT_MS
from runtime.limits import DEFAULT_LIMITS
from runtime.tracing import TracingConfig

ENGINE, GATEWAY = "engine", "pipelinegateway"
SERVICES = {
    ENGINE: "runtime.dataflow.engine",
    GATEWAY: "runtime.dataflow.pipelinegateway",
}
GATEWAY_HTTP, GATEWAY_GRPC = 9010, 9011
METRICS_PORT = 9006
# Where each serves /metrics (the pipeline gateway on its HTTP port).
METRICS_PORTS = {ENGINE: METRICS_PORT, GATEWAY: GATEWAY_HTTP}
# Per service: the engine calls the step models through Envoy's Service.
EXTRA_ARGS = {
    ENGINE: lambda ns: ["--envoy", envoy_url("http", ns),
                        "--metrics-port", str(METRICS_PORT)],
    GATEWAY: lambda ns: ["--http-port", str(GATEWAY_HTTP), "--grpc-port", str(GATEWAY_GRPC)],
}
DEFAULT_RESOURCES = {
    # the joins plus every step's model call (each request and response held in memory while
    # in flight): near the separate engine and model gateway together (bench/pipelines.py:
    # the gateway took twice the engine's CPU per request, both peaked near 80 MiB RSS), less
    # one interpreter and the two Kafka hops per step the merge removes
    ENGINE: Resources("300m", "384Mi", "2", "1536Mi"),
    GATEWAY: Resources("200m", "256Mi", "1", "1Gi"),
}


def envoy_url(scheme: str, namespace: str) -> str:
    return f"{scheme}://{ENVOY}.{namespace}.svc:{ENVOY_PORT}"


def render(namespace: str, image: str, pull_policy: str, replicas: dict[str, int],
           resources: dict[str, Resources], bootstrap: str, kafka_prefix: str,
           kafka_env: list[dict], kafka_volumes: list[dict], kafka_mounts: list[dict],
           service_account: str, topic_replication: int = 1,
           topic_partitions: int = 1, env: list[dict] | None = None,
           envoy_tls_secret: str | None = None,
           max_request_bytes: int = DEFAULT_LIMITS.maxRequestBytes,
           tracing: TracingConfig | None = None) -> list[dict]:
    """`env`: added to every service (the scheduler token); `envoy_tls_secret`: Envoy serves
    TLS, so the engine calls the models on https and verifies Envoy with the Secret's ca.crt
    (only that key is mounted); `tracing`: the services send spans to its collector."""
    trace_env = [{"name": k, "value": v} for k, v in (tracing.env() if tracing else {}).items()]
    out = []
    for name, module in SERVICES.items():
        tmp, tmp_mount = tmp_volume()
        container: dict[str, Any] = {
            "name": name,
            "image": image,
            "imagePullPolicy": pull_policy,
            "command": ["python", "-m", module],
            "args": ["--scheduler", f"{SCHEDULER}:{API_PORT}", "--kafka-bootstrap", bootstrap,
                     "--kafka-prefix", kafka_prefix, "--kafka-namespace", namespace,
                     "--kafka-replication", str(topic_replication),
                     "--kafka-partitions", str(topic_partitions),
                     # a cluster's Kafka wakes a waiting fetch on produce: a long wait is free
                     "--kafka-fetch-wait-ms", str(FETCH_WAIT_MS["apache"]),
                     *EXTRA_ARGS[name](namespace),
                     *(["--max-request-bytes", str(max_request_bytes)]
                       if name == GATEWAY else [])],
            "env": [*kafka_env, *(env or []), *trace_env],
            "resources": resources[name].render(),
            "securityContext": RESTRICTED_CONTAINER,
            "volumeMounts": [tmp_mount, *kafka_mounts],
        }
        volumes = [tmp, *kafka_volumes]
        if name == ENGINE and envoy_tls_secret:
            args = container["args"]
            args[args.index("--envoy") + 1] = envoy_url("https", namespace)
            container["env"].append({"name": ENVOY_CA_ENV, "value": f"{ENVOY_CA_DIR}/ca.crt"})
            container["volumeMounts"].append({"name": "envoy-ca", "mountPath": ENVOY_CA_DIR,
                                              "readOnly": True})
            volumes.append(envoy_tls_volume(envoy_tls_secret, "envoy-ca", only_ca=True))
        if name == GATEWAY:
            container["ports"] = [{"name": "http", "containerPort": GATEWAY_HTTP},
                                  {"name": "grpc", "containerPort": GATEWAY_GRPC}]
            container["readinessProbe"] = http_probe(GATEWAY_HTTP, "/v2/health/ready",
                                                     period=5)
            container["livenessProbe"] = http_probe(GATEWAY_HTTP, "/v2/health/live",
                                                    initial=15, failures=6)
        else:
            # the engine serves nothing but /metrics (prometheus_client's server, started
            # first): its answer is the sign of a live process
            container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
            container["readinessProbe"] = http_probe(METRICS_PORT, "/metrics", period=10)
            container["livenessProbe"] = http_probe(METRICS_PORT, "/metrics", initial=15,
                                                    failures=6)
        count = replicas.get(name, 1)
        pod_spec = {"serviceAccountName": service_account,
                    "automountServiceAccountToken": False,
                    # no <SERVICE>_PORT variables: they could set CORE2_* settings
                    "enableServiceLinks": False,
                    "securityContext": RESTRICTED_POD,
                    "containers": [container], "volumes": volumes}
        if count > 1:
            pod_spec["topologySpreadConstraints"] = spread(selector(name))
            # consumers rebalance when one goes; one at a time keeps the group consuming
            out.append(disruption_budget(name, namespace, name, selector(name)))
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(name, namespace, name),
            "spec": {
                "replicas": count,
                "selector": {"matchLabels": selector(name)},
                "template": {
                    "metadata": {"labels": selector(name),
                                 "annotations": scrape_annotations(METRICS_PORTS[name])},
                    "spec": pod_spec,
                },
            },
        })
    out.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(GATEWAY, namespace, GATEWAY),
        "spec": {"selector": selector(GATEWAY),
                 "ports": [{"name": "http", "port": GATEWAY_HTTP, "targetPort": GATEWAY_HTTP},
                           {"name": "grpc", "port": GATEWAY_GRPC, "targetPort": GATEWAY_GRPC,
                            "appProtocol": "kubernetes.io/h2c"}]},
    })
    return out
