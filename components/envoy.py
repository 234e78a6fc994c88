"""Envoy: the single OIP ingress. Bootstrap in a ConfigMap (ADS to the scheduler), a
Deployment that rolls when the bootstrap changes, and a Service of configurable type.

The bootstrap ConfigMap's name carries a hash of its content. Pulumi replaces a ConfigMap whose
data changes (unless the provider sets enableConfigMapMutable), and a ConfigMap with a fixed
name is replaced delete-first: pods restarting in that window cannot mount it. A new name is a
new object instead: Pulumi creates it, the Deployment's volume points at it (so pods roll), and
the old one is deleted only after the Deployment has been updated.
"""

import json
from typing import Any

from components import envoy_bootstrap
from components.k8s import (
    ENVIRONMENT_LABEL,
    RESTRICTED_CONTAINER,
    Resources,
    checksum,
    disruption_budget,
    http_probe,
    metadata,
    scrape_annotations,
    selector,
    spread,
    tcp_probe,
)
from components.scheduler import NAME as SCHEDULER
from components.scheduler import XDS_PORT
from components.secrets import ENVOY_TLS_DIR, envoy_tls_volume
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.tracing import TracingConfig

NAME = "envoy"
LISTEN_PORT, ADMIN_PORT, HEALTH_PORT = 9000, 9901, 9903  # admin: loopback only
DRAIN_SECONDS = 15  # preStop: time for load balancers to see the pod fail and stop sending
DEFAULT_IMAGE = "envoyproxy/envoy:v1.40.0"
DEFAULT_RESOURCES = Resources("200m", "128Mi", "2", "512Mi")
ENVOY_UID = 101  # the `envoy` user of the official image


def render(namespace: str, image: str, replicas: int, resources: Resources,
           service_type: str, source_ranges: list[str], service_annotations: dict,
           service_account: str, environment: str = "development",
           tls_secret: str | None = None, limits: InferenceLimits = DEFAULT_LIMITS,
           tracing: TracingConfig | None = None) -> list[dict]:
    boot = envoy_bootstrap.bootstrap(f"{SCHEDULER}.{namespace}.svc", XDS_PORT, LISTEN_PORT,
                                     ADMIN_PORT, tls_dir=ENVOY_TLS_DIR if tls_secret else None,
                                     health_port=HEALTH_PORT, limits=limits, tracing=tracing)
    config_name = bootstrap_name(boot)
    config = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(config_name, namespace, NAME),
        "data": {"envoy.json": json.dumps(boot, indent=2, sort_keys=True)},
    }
    container: dict[str, Any] = {
        "name": NAME,
        "image": image,
        "command": ["envoy"],
        "args": ["-c", "/etc/envoy/envoy.json", "--service-cluster", "core2",
                 "--drain-time-s", "20"],
        "ports": [{"name": "http", "containerPort": LISTEN_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        # the admin port is loopback-only: probes go through the health listener, whose
        # /ready turns 503 once the preStop hook has failed health checks
        "readinessProbe": http_probe(HEALTH_PORT, "/ready", period=5, initial=2),
        "livenessProbe": tcp_probe(LISTEN_PORT, period=10, initial=10),
        "lifecycle": {"preStop": {"exec": {"command": prestop_command()}}},
        "resources": resources.render(),
        "securityContext": {**RESTRICTED_CONTAINER, "runAsUser": ENVOY_UID},
        "volumeMounts": [{"name": "bootstrap", "mountPath": "/etc/envoy", "readOnly": True}],
    }
    volumes = [{"name": "bootstrap", "configMap": {"name": config_name}}]
    if tls_secret:
        container["volumeMounts"].append({"name": "tls", "mountPath": ENVOY_TLS_DIR,
                                          "readOnly": True})
        volumes.append(envoy_tls_volume(tls_secret, "tls"))
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(NAME, namespace, NAME),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(NAME)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": selector(NAME),
                    "annotations": {
                        **scrape_annotations(HEALTH_PORT, "/stats/prometheus"),
                        # a new bootstrap changes the pod template, so pods roll
                        "core2.io/bootstrap-checksum": checksum(boot),
                    },
                },
                "spec": {
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": ENVOY_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    # the preStop drain, then Envoy's own shutdown
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + 15,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    if replicas > 1:
        deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] = spread(
            selector(NAME))
    svc_spec = {"type": service_type, "selector": selector(NAME),
                "ports": [{"name": "http", "port": LISTEN_PORT, "targetPort": LISTEN_PORT,
                           "appProtocol": app_protocol(bool(tls_secret))}]}
    if service_type == "LoadBalancer":
        svc_spec["externalTrafficPolicy"] = "Local"
        if source_ranges:
            svc_spec["loadBalancerSourceRanges"] = list(source_ranges)
    service: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
               "metadata": metadata(NAME, namespace, NAME, annotations=service_annotations),
               "spec": svc_spec}
    # policies treat an exposed Service in production more strictly
    service["metadata"]["labels"][ENVIRONMENT_LABEL] = environment
    out = [config, deployment, service]
    if replicas > 1:  # one ingress pod down at a time through node drains
        out.append(disruption_budget(NAME, namespace, NAME, selector(NAME)))
    return out


def bootstrap_name(boot: dict) -> str:
    return f"{NAME}-bootstrap-{checksum(boot)[:10]}"


def app_protocol(tls: bool) -> str:
    """What the listener speaks, for L7 load balancers and meshes in front of the Service:
    TLS (HTTP/1.1 and h2 by ALPN) or plaintext with h2c for gRPC."""
    return "https" if tls else "kubernetes.io/h2c"


def prestop_command(admin_port: int = ADMIN_PORT, drain: int = DRAIN_SECONDS) -> list[str]:
    """Fail health checks through the loopback admin API (readiness turns 503, endpoints drop
    the pod), keep serving in-flight and late requests for `drain` seconds, then let the
    kubelet stop Envoy. bash's /dev/tcp: the Envoy image has neither curl nor wget."""
    request = ("POST /healthcheck/fail HTTP/1.1\\r\\nHost: localhost\\r\\n"
               "Content-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
    return ["/bin/bash", "-c",
            f"exec 3<>/dev/tcp/127.0.0.1/{admin_port} && printf '{request}' >&3 "
            f"&& timeout 2 cat <&3 >/dev/null; sleep {drain}"]
