"""The core2 Pulumi program: stack config in, Platform + Servers + Models/Pipelines/Experiments
out. A `local` target deploys only the resources, to the scheduler `core2 up` started."""

from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from components import (
    Connection,
    Experiment,
    KafkaArgs,
    Model,
    Pipeline,
    Platform,
    PlatformArgs,
    Server,
    ServerArgs,
)
from components.envoy import LISTEN_PORT
from components.envoy import NAME as ENVOY_SERVICE
from components.objects import snake_case
from components.resources import version_key
from components.seldon import SeldonCrds, seldon_object
from components.server import TRITON_IMAGE
from infra import config as stack_config
from infra.config import StackConfig
from runtime.specs.model import ModelSpec

RESOURCE_CLASSES = {"Model": Model, "Pipeline": Pipeline, "Experiment": Experiment}


def platform_args(cfg: StackConfig) -> PlatformArgs:
    kafka = KafkaArgs(
        mode=cfg.kafkaMode, bootstrap_servers=cfg.kafkaBootstrap,
        security_protocol=cfg.kafkaSecurityProtocol, sasl_mechanism=cfg.kafkaSaslMechanism,
        sasl_secret=cfg.kafkaSaslSecret, ca_secret=cfg.kafkaCaSecret,
        strimzi_chart_version=cfg.strimziChartVersion,
        install_operator=cfg.strimziInstallOperator, global_resources=cfg.strimziGlobalResources,
        strimzi_api_version=cfg.strimziApiVersion, replicas=cfg.kafkaReplicas,
        storage_size=cfg.kafkaStorageSize, storage_class=cfg.storageClass,
        topic_replicas=cfg.kafkaTopicReplication)
    return PlatformArgs(
        namespace=cfg.namespace, image=cfg.image, image_pull_policy=cfg.imagePullPolicy,
        create_namespace=cfg.createNamespace, storage_class=cfg.storageClass,
        scheduler_storage=cfg.schedulerStorage,
        replica_lost_after_seconds=cfg.replicaLostAfterSeconds,
        scheduler_token_secret=cfg.schedulerTokenSecret, envoy_tls_secret=cfg.envoyTlsSecret,
        limits=cfg.limits, tracing=cfg.tracing,
        envoy_image=cfg.envoyImage,
        envoy_replicas=cfg.envoyReplicas, envoy_service_type=cfg.envoyServiceType,
        load_balancer_source_ranges=cfg.loadBalancerSourceRanges,
        envoy_service_annotations=cfg.envoyServiceAnnotations,
        dataflow_replicas=cfg.dataflowReplicas, kafka=kafka, kafka_prefix=cfg.kafkaPrefix,
        kafka_topic_partitions=cfg.kafkaTopicPartitions,
        resources=cfg.resources, monitoring_namespace=cfg.monitoringNamespace,
        grafana_dashboard_namespace=cfg.grafanaDashboardNamespace,
        deployer_subjects=cfg.deployerSubjects, environment=cfg.environment,
        image_pull_secrets=cfg.imagePullSecrets,
        # the scheduler scales servers only when asked: when a server has `autoscaling`
        autoscaling={"servers": True} if any(s.autoscaling for s in cfg.servers) else {})


def server_args(cfg: StackConfig) -> list[ServerArgs]:
    return [ServerArgs(
        name=s.name, namespace=cfg.namespace, image=cfg.image, type=s.type,
        replicas=s.replicas, capabilities=s.capabilities,
        extra_capabilities=s.extraCapabilities, memory=s.memory, over_commit=s.overCommit,
        gpu=s.gpu, node_selector=s.nodeSelector, tolerations=s.tolerations,
        cache_size=s.cacheSize, storage_class=cfg.storageClass,
        triton_image=s.tritonImage or TRITON_IMAGE, image_pull_policy=cfg.imagePullPolicy,
        server_resources=s.resources.get("server"), agent_resources=s.resources.get("agent"),
        hpa=s.hpa, autoscaling=s.autoscaling, image_pull_secrets=cfg.imagePullSecrets,
        scheduler_token_secret=cfg.schedulerTokenSecret, env=s.env, env_from=s.envFrom,
        volumes=s.volumes, volume_mounts=s.volumeMounts,
        service_account_annotations=s.serviceAccountAnnotations,
        storage_secret=s.storageSecret.model_dump() if s.storageSecret else None,
        drain_seconds=s.drainSeconds, tracing=cfg.tracing)
        for s in cfg.servers]


def build(cfg: StackConfig) -> dict:
    """Declare every resource of the stack; returns the stack outputs."""
    outputs: dict = {"target": cfg.target}
    if cfg.target == "local":
        conn = Connection(address=cfg.schedulerAddress)
        outputs["schedulerAddress"] = cfg.schedulerAddress
        return {**outputs, **scheduler_resources(cfg, conn, [])}

    if cfg.skipAwait:
        pulumi.runtime.register_resource_transform(skip_await)
    provider = k8s.Provider(
        "k8s", kubeconfig=pulumi.Output.secret(cfg.kubeconfig_ref()), context=cfg.context,
        namespace=cfg.namespace, enable_server_side_apply=True,
        **{snake_case(k): v for k, v in cfg.kubernetesProvider.items()})
    on_cluster = pulumi.ResourceOptions(provider=provider)
    platform = Platform("core2", platform_args(cfg), on_cluster)
    pools = server_args(cfg)
    # an autoscaled server's Server CR needs the CRDs (whatever the resourceDelivery)
    crds = SeldonCrds("seldon-crds", on_cluster) if cfg.installCrds and (
        cfg.resourceDelivery == "crd" or any(a.autoscaling for a in pools)) else None
    servers = [Server(f"server-{a.name}", a, pulumi.ResourceOptions(
        provider=provider, depends_on=[platform, *([crds] if crds and a.autoscaling else [])]))
        for a in pools]
    outputs.update(namespace=cfg.namespace, schedulerAddress=platform.scheduler_address,
                   inferenceEndpoint=f"{ENVOY_SERVICE}.{cfg.namespace}.svc:{LISTEN_PORT}",
                   kafkaBootstrap=platform.kafka.bootstrap_servers,
                   servers=[a.name for a in pools])
    deps: list[pulumi.Resource] = [platform, *servers]
    if cfg.resourceDelivery == "scheduler":
        conn = Connection(kubeconfig=cfg.kubeconfig_ref(), context=cfg.context,
                          namespace=cfg.namespace)
        return {**outputs, **scheduler_resources(cfg, conn, deps)}
    if crds:
        deps.append(crds)
    for kind in ("Model", "Pipeline", "Experiment"):
        resources = cfg.resources_of(kind)  # reads the manifest files: once
        for r in resources:
            seldon_object(kind, r.name, r.spec.model_dump(exclude_none=True), cfg.namespace,
                          pulumi.ResourceOptions(provider=provider, depends_on=deps))
        if kind == "Model":
            # the version key: it changes exactly when the scheduler makes a new version
            outputs["models"] = {r.name: version_key(cast(ModelSpec, r.spec))
                                 for r in resources}
        else:
            outputs[f"{kind.lower()}s"] = sorted(r.name for r in resources)
    return outputs


def scheduler_resources(cfg: StackConfig, conn: Connection,
                        deps: list[pulumi.Resource]) -> dict:
    """Models, Pipelines and Experiments through the scheduler API (dynamic providers)."""
    outputs = {}
    # Models first, then pipelines over them, then experiments over either.
    for kind in ("Model", "Pipeline", "Experiment"):
        resources = cfg.resources_of(kind)  # reads the manifest files: once
        made = [RESOURCE_CLASSES[kind](f"{kind.lower()}-{r.name}", r.spec, conn, name=r.name,
                                       opts=pulumi.ResourceOptions(depends_on=list(deps)))
                for r in resources]
        outputs[f"{kind.lower()}s"] = {r.name: m.version
                                        for r, m in zip(resources, made, strict=True)}
        deps = [*deps, *made]
    return outputs


def skip_await(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """pulumi.com/skipAwait on every Kubernetes object: deploy without waiting for pods."""
    if not args.type_.startswith("kubernetes:") or "metadata" not in args.props:
        return None
    metadata: Any = args.props["metadata"]  # a plain dict: the manifests are rendered
    meta = dict(metadata or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), "pulumi.com/skipAwait": "true"}
    return pulumi.ResourceTransformResult({**args.props, "metadata": meta}, args.opts)


def main() -> None:
    cfg = stack_config.read(pulumi.Config(stack_config.PROJECT))
    for key, value in build(cfg).items():
        pulumi.export(key, value)
