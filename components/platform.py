"""Platform: everything core2 runs on a cluster except the model Servers.

Namespace, RBAC, Kafka (Strimzi or external), the scheduler, Envoy, the dataflow services and
NetworkPolicies, all from one runtime image. Servers are separate `Server` components so a
stack can add or resize them without touching the platform.
"""

from dataclasses import dataclass, field
from typing import cast

import pulumi
import pulumi_kubernetes as k8s
from pydantic import ValidationError

from components import (
    claims,
    controller,
    dashboard,
    dataflow,
    envoy,
    network,
    rbac,
    scheduler,
    secrets,
)
from components.k8s import ENVIRONMENT_LABEL, Resources, labels, with_pull_secrets
from components.kafka import Kafka, KafkaArgs
from components.objects import register
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.scheduler.autoscale import AutoscaleConfig
from runtime.specs.common import describe
from runtime.tracing import TracingConfig


@dataclass
class PlatformArgs:
    namespace: str
    image: str  # the runtime image, pinned by tag or digest
    image_pull_policy: str = "IfNotPresent"
    create_namespace: bool = True
    storage_class: str | None = None
    scheduler_storage: str = "1Gi"
    # a replica whose agent is away this long is forgotten and its models placed elsewhere
    replica_lost_after_seconds: int = 10
    # Secret (key `token`) whose bearer token the scheduler requires from every client
    scheduler_token_secret: str | None = None
    # kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt): Envoy serves inference over TLS
    envoy_tls_secret: str | None = None
    # body size and per-model overload limits (Envoy, the pipeline gateway)
    limits: InferenceLimits = DEFAULT_LIMITS
    # OpenTelemetry: Envoy and the dataflow services send spans here (off when None)
    tracing: TracingConfig | None = None
    envoy_image: str = envoy.DEFAULT_IMAGE
    envoy_replicas: int = 1
    envoy_service_type: str = "ClusterIP"  # ClusterIP, NodePort or LoadBalancer
    load_balancer_source_ranges: list[str] = field(default_factory=list)
    envoy_service_annotations: dict = field(default_factory=dict)
    dataflow_replicas: dict[str, int] = field(default_factory=dict)
    kafka: KafkaArgs = field(default_factory=KafkaArgs)
    kafka_prefix: str = "seldon"
    kafka_topic_partitions: int = 1
    # per-service overrides: {"scheduler"|"envoy"|"engine"|...: {cpuRequest, memoryLimit, ...}}
    resources: dict[str, dict] = field(default_factory=dict)
    monitoring_namespace: str | None = "monitoring"
    deployer_subjects: list[dict] = field(default_factory=list)
    environment: str = "development"  # "production" turns on the stricter policies
    image_pull_secrets: list[str] = field(default_factory=list)
    # ship docs/grafana/core2.json as a ConfigMap for Grafana's sidecar in this namespace
    grafana_dashboard_namespace: str | None = None
    # the controller (Seldon's CRs -> scheduler): one leads, the rest stand by; 0: none
    controller_replicas: int = 2
    # the scheduler's autoscaling (runtime.scheduler.autoscale.AutoscaleConfig fields, e.g.
    # {"servers": True}); a stack turns servers on when one of its servers has `autoscaling`
    autoscaling: dict = field(default_factory=dict)


def checked_autoscaling(fields: dict) -> dict:
    """The scheduler refuses a bad --autoscale-json at start: refuse it at preview instead."""
    try:
        AutoscaleConfig.model_validate(fields)
    except ValidationError as e:
        raise ValueError(describe(e, "autoscaling")) from None
    return fields


class Platform(pulumi.ComponentResource):
    namespace: str
    scheduler_address: str
    envoy_service: k8s.core.v1.Service

    def __init__(self, name: str, args: PlatformArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("core2:index:Platform", name, None, opts)
        ns = args.namespace
        self.args = args
        self.namespace = ns
        self.objects: dict[str, pulumi.CustomResource] = {}
        deps: list[pulumi.Resource] = []
        if args.create_namespace:
            deps.append(k8s.core.v1.Namespace(
                f"{name}-namespace", metadata={"name": ns, "labels": {
                    **labels("namespace"), ENVIRONMENT_LABEL: args.environment}},
                opts=pulumi.ResourceOptions(parent=self)))
        child = pulumi.ResourceOptions(parent=self, depends_on=deps)
        self._add(name, rbac.render(ns, args.deployer_subjects), child)

        self.kafka = Kafka(f"{name}-kafka", args.kafka, ns, child)
        res = args.resources
        volumes, mounts = args.kafka.client_volumes()
        token_env = secrets.scheduler_token_env(args.scheduler_token_secret)
        after_kafka = pulumi.ResourceOptions(parent=self, depends_on=deps + self.kafka.ready)
        self._add(name, dataflow.render(
            ns, args.image, args.image_pull_policy, args.dataflow_replicas,
            {s: Resources.from_config(res.get(s), dataflow.DEFAULT_RESOURCES[s])
             for s in dataflow.SERVICES},
            self.kafka.bootstrap_servers, args.kafka_prefix, args.kafka.client_env(),
            volumes, mounts, rbac.ACCOUNTS["dataflow"], args.kafka.topic_replication(),
            args.kafka_topic_partitions, token_env, args.envoy_tls_secret,
            args.limits.maxRequestBytes, args.tracing), after_kafka)
        # the scheduler resolves the gateway Service's name to its ClusterIP for Envoy's EDS
        gateway_host = f"{dataflow.GATEWAY}.{ns}.svc"
        scheduler_objects = scheduler.render(
            ns, args.image, args.image_pull_policy,
            Resources.from_config(res.get("scheduler"), scheduler.DEFAULT_RESOURCES),
            args.scheduler_storage, args.storage_class, rbac.ACCOUNTS["scheduler"],
            gateway_host, args.replica_lost_after_seconds, token_env, args.limits,
            feedback_topic=scheduler.FeedbackTopic(
                self.kafka.bootstrap_servers, args.kafka_prefix, args.kafka.client_env(),
                volumes, mounts, args.kafka.topic_replication()),
            autoscale=checked_autoscaling(args.autoscaling))
        # a new schedulerStorage/storageClass must not replace the StatefulSet (components.claims)
        self._add(name, scheduler_objects, pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(ignore_changes=[claims.IGNORED])))
        self._add(name, envoy.render(
            ns, args.envoy_image, args.envoy_replicas,
            Resources.from_config(res.get("envoy"), envoy.DEFAULT_RESOURCES),
            args.envoy_service_type, args.load_balancer_source_ranges,
            args.envoy_service_annotations, rbac.ACCOUNTS["envoy"], args.environment,
            args.envoy_tls_secret, args.limits, args.tracing), child)
        if args.controller_replicas:
            self._add(name, controller.render(
                ns, args.image, args.image_pull_policy,
                Resources.from_config(res.get("controller"), controller.DEFAULT_RESOURCES),
                args.controller_replicas, token_env), child)
        self._add(name, network.render(ns, args.monitoring_namespace), child)
        if args.grafana_dashboard_namespace:
            self._add(name, dashboard.render(args.grafana_dashboard_namespace), child)

        self.scheduler_address = f"{scheduler.NAME}.{ns}.svc:{scheduler.API_PORT}"
        self.scheduler = self.objects[f"StatefulSet/{scheduler.NAME}"]
        self.scheduler_claims = claims.ClaimGuard(
            f"{name}-scheduler-claims",
            next(m for m in scheduler_objects if m["kind"] == "StatefulSet"),
            "schedulerStorage", pulumi.ResourceOptions(parent=self, depends_on=[self.scheduler]),
            owner="scheduler")
        # objects.register made a k8s Service of the Service manifest
        self.envoy_service = cast(k8s.core.v1.Service, self.objects[f"Service/{envoy.NAME}"])
        self.register_outputs({
            "namespace": ns,
            "schedulerAddress": self.scheduler_address,
            "kafkaBootstrap": self.kafka.bootstrap_servers,
            "envoyService": self.envoy_service.metadata.name,
        })

    def _add(self, prefix: str, manifests: list[dict], opts: pulumi.ResourceOptions) -> None:
        for m in with_pull_secrets(manifests, self.args.image_pull_secrets):
            self.objects[f"{m['kind']}/{m['metadata']['name']}"] = register(prefix, m, opts)
