"""Envoy: the single OIP ingress. Bootstrap in a ConfigMap (ADS to the scheduler), a
Deployment that rolls when the bootstrap changes, and a Service of configurable type."""

import json

from components import envoy_bootstrap
from components.k8s import (
    ENVIRONMENT_LABEL,
    RESTRICTED_CONTAINER,
    Resources,
    checksum,
    http_probe,
    metadata,
    scrape_annotations,
    selector,
    tcp_probe,
)
from components.scheduler import NAME as SCHEDULER
from components.scheduler import XDS_PORT
from components.secrets import ENVOY_TLS_DIR, envoy_tls_volume

NAME = "envoy"
LISTEN_PORT, ADMIN_PORT = 9000, 9901
DEFAULT_IMAGE = "envoyproxy/envoy:v1.40.0"
DEFAULT_RESOURCES = Resources("200m", "128Mi", "2", "512Mi")
ENVOY_UID = 101  # the `envoy` user of the official image


def render(namespace: str, image: str, replicas: int, resources: Resources,
           service_type: str, source_ranges: list[str], service_annotations: dict,
           service_account: str, environment: str = "development",
           tls_secret: str | None = None) -> list[dict]:
    boot = envoy_bootstrap.bootstrap(f"{SCHEDULER}.{namespace}.svc", XDS_PORT, LISTEN_PORT,
                                     ADMIN_PORT, tls_dir=ENVOY_TLS_DIR if tls_secret else None)
    config = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(f"{NAME}-bootstrap", namespace, NAME),
        "data": {"envoy.json": json.dumps(boot, indent=2, sort_keys=True)},
    }
    container = {
        "name": NAME,
        "image": image,
        "command": ["envoy"],
        "args": ["-c", "/etc/envoy/envoy.json", "--service-cluster", "core2",
                 "--drain-time-s", "20"],
        "ports": [{"name": "http", "containerPort": LISTEN_PORT},
                  {"name": "admin", "containerPort": ADMIN_PORT}],
        "readinessProbe": http_probe(ADMIN_PORT, "/ready", period=5, initial=2),
        "livenessProbe": tcp_probe(ADMIN_PORT, period=10, initial=10),
        "resources": resources.render(),
        "securityContext": {**RESTRICTED_CONTAINER, "runAsUser": ENVOY_UID},
        "volumeMounts": [{"name": "bootstrap", "mountPath": "/etc/envoy", "readOnly": True}],
    }
    volumes = [{"name": "bootstrap", "configMap": {"name": f"{NAME}-bootstrap"}}]
    if tls_secret:
        container["volumeMounts"].append({"name": "tls", "mountPath": ENVOY_TLS_DIR,
                                          "readOnly": True})
        volumes.append(envoy_tls_volume(tls_secret, "tls"))
    deployment = {
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
                        **scrape_annotations(ADMIN_PORT, "/stats/prometheus"),
                        # a new bootstrap changes the pod template, so pods roll
                        "core2.io/bootstrap-checksum": checksum(boot),
                    },
                },
                "spec": {
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": ENVOY_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    svc_spec = {"type": service_type, "selector": selector(NAME),
                "ports": [{"name": "http", "port": LISTEN_PORT, "targetPort": LISTEN_PORT,
                           "appProtocol": "kubernetes.io/h2c"}]}
    if service_type == "LoadBalancer":
        svc_spec["externalTrafficPolicy"] = "Local"
        if source_ranges:
            svc_spec["loadBalancerSourceRanges"] = list(source_ranges)
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": metadata(NAME, namespace, NAME, annotations=service_annotations),
               "spec": svc_spec}
    # policies treat an exposed Service in production more strictly
    service["metadata"]["labels"][ENVIRONMENT_LABEL] = environment
    out = [config, deployment, service]
    if replicas > 1:  # keep one ingress pod through node drains
        out.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": metadata(NAME, namespace, NAME),
                    "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(NAME)}}})
    return out
