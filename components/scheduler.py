"""The scheduler: one-replica StatefulSet with a PVC for its SQLite state, and its Services."""

import json
from dataclasses import dataclass
from typing import Any

from components.k8s import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Resources,
    metadata,
    scrape_annotations,
    selector,
    tcp_probe,
    tmp_volume,
)
from runtime.limits import DEFAULT_LIMITS, InferenceLimits

NAME = "scheduler"
XDS_PORT, API_PORT, AGENT_PORT, METRICS_PORT = 9002, 9004, 9005, 9006
FEEDBACK_HTTP_PORT, FEEDBACK_GRPC_PORT = 9012, 9013  # adaptive experiments' feedback (Envoy)
DATA_DIR = "/var/lib/core2"
DEFAULT_RESOURCES = Resources("200m", "256Mi", "1", "1Gi")


def args(pipeline_gateway_host: str | None = None, replica_lost_after_seconds: int = 10,
         limits: InferenceLimits = DEFAULT_LIMITS, feedback_host: str | None = None) -> list:
    """The scheduler's flags. It resolves `pipeline_gateway_host` (the gateway Service's name)
    and `feedback_host` (its own Service's, where Envoy sends feedback) itself: Envoy receives
    them as EDS endpoints, which must be IP addresses."""
    out = ["--data-dir", DATA_DIR, "--api-port", str(API_PORT), "--agent-port", str(AGENT_PORT),
           "--xds-port", str(XDS_PORT), "--metrics-port", str(METRICS_PORT), "--host", "0.0.0.0",
           "--replica-lost-after", str(replica_lost_after_seconds), *limits.scheduler_args()]
    if feedback_host is not None:
        out += ["--feedback-http-port", str(FEEDBACK_HTTP_PORT), "--feedback-grpc-port",
                str(FEEDBACK_GRPC_PORT), "--feedback-host", feedback_host]
    if pipeline_gateway_host is not None:
        out += ["--pipeline-gateway-http", f"{pipeline_gateway_host}:9010",
                "--pipeline-gateway-grpc", f"{pipeline_gateway_host}:9011"]
    return out


@dataclass
class FeedbackTopic:
    """The Kafka the scheduler produces adaptive experiments' feedback to (the dataflow's)."""

    bootstrap: str
    prefix: str
    env: list[dict]           # KAFKA_* settings (components.kafka client_env)
    volumes: list[dict]       # its CA, if any
    mounts: list[dict]
    replication: int = 1

    def args(self, namespace: str) -> list[str]:
        return ["--feedback-kafka", "--kafka-bootstrap", self.bootstrap, "--kafka-prefix",
                self.prefix, "--kafka-namespace", namespace, "--kafka-replication",
                str(self.replication)]


def render(namespace: str, image: str, pull_policy: str, resources: Resources,
           storage_size: str, storage_class: str | None, service_account: str,
           pipeline_gateway_host: str | None = None, replica_lost_after_seconds: int = 10,
           env: list[dict] | None = None, limits: InferenceLimits = DEFAULT_LIMITS,
           feedback_topic: FeedbackTopic | None = None,
           autoscale: dict | None = None) -> list[dict]:
    """`autoscale`: AutoscaleConfig fields (--autoscale-json), e.g. {"servers": true}."""
    ports = [("xds", XDS_PORT), ("api", API_PORT), ("agent", AGENT_PORT),
             ("feedback-grpc", FEEDBACK_GRPC_PORT), ("metrics", METRICS_PORT),
             ("feedback-http", FEEDBACK_HTTP_PORT)]
    http1 = ("metrics", "feedback-http")
    tmp, tmp_mount = tmp_volume()
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["python", "-m", "runtime.scheduler"],
        "args": args(pipeline_gateway_host, replica_lost_after_seconds, limits,
                     feedback_host=f"{NAME}.{namespace}.svc")
        + (feedback_topic.args(namespace) if feedback_topic else [])
        + (["--autoscale-json", json.dumps(autoscale, sort_keys=True)] if autoscale else []),
        "env": [*(env or []), *(feedback_topic.env if feedback_topic else [])],
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
        # TCP, not gRPC health: the scheduler's API port accepting connections is its readiness.
        "readinessProbe": tcp_probe(API_PORT, period=5),
        "livenessProbe": tcp_probe(API_PORT, period=10, initial=15, failures=6),
        "resources": resources.render(),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "state", "mountPath": DATA_DIR}, tmp_mount,
                         *(feedback_topic.mounts if feedback_topic else [])],
    }
    claim: dict[str, Any] = {"metadata": {"name": "state"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": storage_size}}}}
    if storage_class:
        claim["spec"]["storageClassName"] = storage_class
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata(NAME, namespace, NAME),
        "spec": {
            "replicas": 1,  # the SQLite state has one writer
            "serviceName": f"{NAME}-pods",
            "selector": {"matchLabels": selector(NAME)},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                     "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": selector(NAME),
                             "annotations": scrape_annotations(METRICS_PORT)},
                "spec": {"serviceAccountName": service_account,
                         "automountServiceAccountToken": False,
                         # no <SERVICE>_PORT variables: they could set CORE2_* settings
                         "enableServiceLinks": False,
                         "securityContext": RESTRICTED_POD,
                         "terminationGracePeriodSeconds": 30,
                         "containers": [container],
                         "volumes": [tmp, *(feedback_topic.volumes if feedback_topic else [])]},
            },
            "volumeClaimTemplates": [claim],
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(NAME, namespace, NAME),
        "spec": {"selector": selector(NAME),
                 "ports": [{"name": n, "port": p, "targetPort": p,
                            "appProtocol": "kubernetes.io/h2c"}
                           for n, p in ports if n not in http1]
                 + [{"name": n, "port": p, "targetPort": p} for n, p in ports if n in http1]},
    }
    headless = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(f"{NAME}-pods", namespace, NAME),
        "spec": {"clusterIP": "None", "selector": selector(NAME),
                 "ports": [{"name": "api", "port": API_PORT, "targetPort": API_PORT}]},
    }
    return [service, headless, statefulset]
