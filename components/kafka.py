"""Kafka for the dataflow services: in-cluster Strimzi (KRaft) or any external Kafka."""

from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components.k8s import labels

STRIMZI_CHART = "oci://quay.io/strimzi-helm/strimzi-kafka-operator"
CA_MOUNT = "/etc/core2/kafka-ca"


@dataclass
class KafkaArgs:
    mode: Literal["strimzi", "external"] = "strimzi"
    # external: bootstrap servers plus names of existing Secrets (created out of band, e.g. by
    # External Secrets): sasl_secret holds `username` and `password`, ca_secret holds `ca.crt`.
    bootstrap_servers: str | None = None
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_secret: str | None = None
    ca_secret: str | None = None
    # strimzi: operator chart and the cluster it runs.
    strimzi_chart: str = STRIMZI_CHART
    strimzi_chart_version: str = "0.48.0"
    # The operator chart in the namespace (off when a cluster-wide Strimzi already runs), and
    # whether it installs its cluster-wide CRDs and ClusterRoles (opt-in: one admin does it once).
    install_operator: bool = True
    global_resources: bool = False
    strimzi_api_version: str = "kafka.strimzi.io/v1beta2"
    cluster_name: str = "core2"
    replicas: int = 3
    storage_size: str = "20Gi"
    storage_class: str | None = None
    kafka_version: str | None = None  # None: the operator's default
    topic_replicas: int = 0  # replication of the topics core2 creates; 0: 3, or fewer nodes
    resources: dict = field(default_factory=lambda: {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    })
    operator_resources: dict = field(default_factory=lambda: {
        "requests": {"cpu": "200m", "memory": "384Mi"},
        "limits": {"cpu": "1", "memory": "384Mi"},
    })

    def validate(self) -> None:
        if self.mode not in ("strimzi", "external"):
            raise ValueError(f"kafka.mode: {self.mode!r} must be 'strimzi' or 'external'")
        if self.mode == "external" and not self.bootstrap_servers:
            raise ValueError("kafka.bootstrapServers: required when kafka.mode is 'external'")
        if self.security_protocol.startswith("SASL") and not (self.sasl_secret
                                                              and self.sasl_mechanism):
            raise ValueError("kafka.saslSecret and kafka.saslMechanism: required when "
                             f"kafka.securityProtocol is {self.security_protocol}")

    def topic_replication(self) -> int:
        if self.topic_replicas:
            return self.topic_replicas
        return min(3, self.replicas) if self.mode == "strimzi" else 3

    def bootstrap(self, namespace: str) -> str:
        if self.mode == "external":
            return self.bootstrap_servers or ""  # required in this mode (validated)
        return f"{self.cluster_name}-kafka-bootstrap.{namespace}.svc:9092"

    def client_env(self) -> list[dict]:
        """KAFKA_* settings for the dataflow containers; credentials come from Secrets."""
        env: list[dict[str, Any]] = [{"name": "KAFKA_SECURITY_PROTOCOL",
                                      "value": self.security_protocol}]
        if self.sasl_mechanism:
            env.append({"name": "KAFKA_SASL_MECHANISM", "value": self.sasl_mechanism})
        if self.sasl_secret:
            for var, key in (("KAFKA_SASL_USERNAME", "username"),
                             ("KAFKA_SASL_PASSWORD", "password")):
                env.append({"name": var, "valueFrom": {"secretKeyRef": {
                    "name": self.sasl_secret, "key": key}}})
        if self.ca_secret:
            env.append({"name": "KAFKA_SSL_CA_LOCATION", "value": f"{CA_MOUNT}/ca.crt"})
        return env

    def client_volumes(self) -> tuple[list[dict], list[dict]]:
        if not self.ca_secret:
            return [], []
        return ([{"name": "kafka-ca", "secret": {"secretName": self.ca_secret,
                                                  "items": [{"key": "ca.crt",
                                                             "path": "ca.crt"}]}}],
                [{"name": "kafka-ca", "mountPath": CA_MOUNT, "readOnly": True}])


CLUSTER_WIDE = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def retain_cluster_wide(
        args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """A chart's cluster-wide objects may serve other stacks: a destroy leaves them."""
    kind = args.type_.rsplit(":", 1)[-1]
    if kind not in CLUSTER_WIDE:
        return None
    return pulumi.ResourceTransformResult(
        args.props, pulumi.ResourceOptions.merge(args.opts,
                                                 pulumi.ResourceOptions(retain_on_delete=True)))


class Kafka(pulumi.ComponentResource):
    """Strimzi operator (Helm chart v4) + a KRaft `KafkaNodePool` and `Kafka`, or nothing but
    connection settings for an external cluster. `ready` is the resource to depend on."""

    def __init__(self, name: str, args: KafkaArgs, namespace: str,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("core2:index:Kafka", name, None, opts)
        args.validate()
        self.args = args
        self.bootstrap_servers = args.bootstrap(namespace)
        self.ready: list[pulumi.Resource] = []
        child = pulumi.ResourceOptions(parent=self)
        if args.mode == "strimzi":
            self._strimzi(name, args, namespace, child)
        self.register_outputs({"bootstrapServers": self.bootstrap_servers})

    def _strimzi(self, name: str, args: KafkaArgs, namespace: str,
                 child: pulumi.ResourceOptions) -> None:
        operator: list[pulumi.Resource] = []
        if args.install_operator:
            operator.append(k8s.helm.v4.Chart(
                f"{name}-strimzi",
                chart=args.strimzi_chart,
                version=args.strimzi_chart_version,
                namespace=namespace,
                values={"watchNamespaces": [], "resources": args.operator_resources,
                        "createGlobalResources": args.global_resources},
                skip_crds=not args.global_resources,
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                    transforms=[retain_cluster_wide])),
            ))
        volume = {"id": 0, "type": "persistent-claim", "size": args.storage_size,
                  "deleteClaim": False, "kraftMetadata": "shared"}
        if args.storage_class:
            volume["class"] = args.storage_class
        cluster_label = {**labels("kafka", args.cluster_name),
                         "strimzi.io/cluster": args.cluster_name}
        after_operator = pulumi.ResourceOptions(parent=self, depends_on=operator)
        pool = k8s.apiextensions.CustomResource(
            f"{name}-pool",
            api_version=args.strimzi_api_version,
            kind="KafkaNodePool",
            metadata={"name": f"{args.cluster_name}-dual", "namespace": namespace,
                      "labels": cluster_label},
            spec={"replicas": args.replicas, "roles": ["controller", "broker"],
                  "storage": {"type": "jbod", "volumes": [volume]},
                  "resources": args.resources},
            opts=after_operator,
        )
        rf = min(3, args.replicas)
        kafka_spec = {
            "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": False}],
            "config": {
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": max(1, rf - 1),
                "default.replication.factor": rf,
                "min.insync.replicas": max(1, rf - 1),
            },
        }
        if args.kafka_version:
            kafka_spec["version"] = args.kafka_version
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster",
            api_version=args.strimzi_api_version,
            kind="Kafka",
            metadata={
                "name": args.cluster_name, "namespace": namespace,
                "labels": labels("kafka", args.cluster_name),
                "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled",
                                # the Kubernetes provider waits until Strimzi reports Ready
                                "pulumi.com/waitFor": "condition=Ready"},
            },
            spec={"kafka": kafka_spec,
                  "entityOperator": {"topicOperator": {}, "userOperator": {}}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*operator, pool]),
        )
        self.ready = [cluster]
