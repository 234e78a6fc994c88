"""Stack configuration: read `core2:*` keys, validate them, and say which field is wrong.

Scalar keys are declared (with descriptions and defaults) in Pulumi.yaml; the structured
keys (servers, models, pipelines, experiments, resources, ...) cannot be typed there, so they
are validated here. Defaults below must match Pulumi.yaml (a test checks that).
"""

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.dataflow import ENGINE
from components.dataflow import SERVICES as DATAFLOW_SERVICES
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.specs.common import SpecError, describe
from runtime.specs.manifest import KINDS, Resource, load_file
from runtime.tracing import TracingConfig

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "core2"


# Options of the Kubernetes provider a stack may set (`kubernetesProvider`); kubeconfig,
# context and namespace have their own keys.
PROVIDER_OPTIONS = {"renderYamlToDirectory", "deleteUnreachable", "skipUpdateUnreachable",
                    "enableConfigMapMutable", "enableSecretMutable", "clusterIdentifier",
                    "suppressDeprecationWarnings", "suppressHelmHookWarnings",
                    "kubeClientSettings", "helmReleaseSettings"}
# The services a stack may size (`resources`) and the fields it may set for each
# (components.k8s.Resources.from_config reads them).
SIZED_SERVICES = ("scheduler", "envoy", "controller", *DATAFLOW_SERVICES)
RESOURCE_FIELDS = ("cpuRequest", "memoryRequest", "cpuLimit", "memoryLimit")
# Services a stack may name that no longer exist: what to set instead.
MERGED_SERVICES = {"modelgateway": ("the model gateway runs inside the engine now", ENGINE)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServerEntry(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=52)
    type: Literal["mlserver", "triton"] = "mlserver"
    replicas: int = Field(default=1, ge=0)
    capabilities: list[str] | None = None
    extraCapabilities: list[str] = []
    memory: str = "1Gi"
    overCommit: int = Field(default=10, ge=0, le=1000)
    gpu: int = Field(default=0, ge=0)
    nodeSelector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    cacheSize: str | None = None
    tritonImage: str | None = None
    resources: dict[str, dict[str, str]] = {}  # {"server": {...}, "agent": {...}}
    hpa: dict[str, int] | None = None
    # {minReplicas, maxReplicas}: the scheduler scales the server (not with hpa)
    autoscaling: dict[str, int] | None = None
    # artifact-store credentials for the agent (Kubernetes EnvVar/EnvFromSource/Volume/
    # VolumeMount objects, camelCase, checked by the API server's schema)
    env: list[dict[str, Any]] = []
    envFrom: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    volumeMounts: list[dict[str, Any]] = []
    serviceAccountAnnotations: dict[str, str] = {}  # IRSA / GKE Workload Identity
    storageSecret: "StorageSecret | None" = None
    # preStop: seconds a replica has to move its models to other replicas before it stops
    drainSeconds: int = Field(default=120, ge=1, le=3600)


class StorageSecret(_Strict):
    """A Secret whose keys are fsspec options (endpoint_url, key, secret, token, ...) for
    every `protocol` URI the server's agent fetches."""

    name: str = Field(min_length=1)
    protocol: Literal["s3", "gs", "az"] = "s3"


class ResourceEntry(_Strict):
    """A Model, Pipeline or Experiment: inline (`name` + `spec`) or from a Seldon YAML file."""

    name: str | None = None
    spec: dict[str, Any] | None = None
    manifest: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.manifest is None and (self.name is None or self.spec is None):
            raise ValueError("give either `manifest` (a Seldon YAML file) or `name` and `spec`")
        if self.manifest is not None and self.spec is not None:
            raise ValueError("give either `manifest` or `spec`, not both")
        return self


class StackConfig(_Strict):
    target: Literal["local", "kubernetes"] = "kubernetes"
    environment: str = "development"
    kubernetesVersion: str = "1.31"
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "core2"
    createNamespace: bool = True
    image: str = "ghcr.io/core2/core2:0.1.0"
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    imagePullSecrets: list[str] = []
    storageClass: str | None = None
    schedulerStorage: str = "1Gi"
    replicaLostAfterSeconds: int = Field(default=10, ge=1)
    schedulerTokenSecret: str | None = None
    envoyTlsSecret: str | None = None
    limits: InferenceLimits = DEFAULT_LIMITS
    tracing: TracingConfig | None = None  # OpenTelemetry (OTLP/gRPC), off when absent
    envoyImage: str = "envoyproxy/envoy:v1.40.0"
    envoyReplicas: int = Field(default=1, ge=1)
    envoyServiceType: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    loadBalancerSourceRanges: list[str] = []
    envoyServiceAnnotations: dict[str, str] = {}
    kafkaMode: Literal["strimzi", "external"] = "strimzi"
    kafkaBootstrap: str | None = None
    kafkaSecurityProtocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = \
        "PLAINTEXT"
    kafkaSaslMechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafkaSaslSecret: str | None = None
    kafkaCaSecret: str | None = None
    kafkaPrefix: str = "seldon"
    kafkaReplicas: int = Field(default=3, ge=1)
    kafkaTopicReplication: int = Field(default=0, ge=0)
    kafkaTopicPartitions: int = Field(default=1, ge=1)
    kafkaStorageSize: str = "20Gi"
    strimziChartVersion: str = "0.48.0"
    strimziApiVersion: str = "kafka.strimzi.io/v1beta2"
    monitoringNamespace: str | None = "monitoring"
    grafanaDashboardNamespace: str | None = None
    schedulerAddress: str = "127.0.0.1:9004"
    # what `core2 promote` may write into this stack's models (components.promote)
    storageScheme: str | None = None
    storageUriMap: dict[str, str] = {}
    resourceDelivery: Literal["crd", "scheduler"] = "crd"
    installCrds: bool = True
    skipAwait: bool = False
    strimziInstallOperator: bool = True
    strimziGlobalResources: bool = False
    kubernetesProvider: dict[str, Any] = {}
    dataflowReplicas: dict[str, Annotated[int, Field(ge=1)]] = {}
    resources: dict[str, dict[str, str]] = {}
    deployerSubjects: list[dict[str, str]] = []
    servers: list[ServerEntry] = []
    models: list[ResourceEntry] = []
    pipelines: list[ResourceEntry] = []
    experiments: list[ResourceEntry] = []

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, values):
        # Pulumi.yaml declares optional keys with default "" (a declared key without a
        # default would be required in every stack)
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if v != ""}
        return values

    @model_validator(mode="after")
    def _target(self):
        if self.target == "kubernetes" and not self.kubeconfig:
            # never fall back to whatever cluster the ambient ~/.kube/config points at
            raise ValueError("kubeconfig: required when target is 'kubernetes'")
        names = [s.name for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"servers: duplicate name(s) {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _provider_options(self):
        unknown = sorted(set(self.kubernetesProvider) - PROVIDER_OPTIONS)
        if unknown:
            raise ValueError(f"kubernetesProvider: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(PROVIDER_OPTIONS))}")
        return self

    @model_validator(mode="after")
    def _service_keys(self):
        _check_services("dataflowReplicas", self.dataflowReplicas, DATAFLOW_SERVICES, "scale")
        _check_services("resources", self.resources, SIZED_SERVICES, "size")
        for service, fields in self.resources.items():
            unknown = sorted(set(fields) - set(RESOURCE_FIELDS))
            if unknown:
                raise ValueError(f"resources.{service}: unknown field(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(RESOURCE_FIELDS)}")
        return self

    def kubeconfig_ref(self) -> str | None:
        """A path (expanded; read at deploy time) or the kubeconfig YAML itself."""
        if self.kubeconfig and "\n" not in self.kubeconfig:
            return os.path.expanduser(self.kubeconfig)
        return self.kubeconfig

    def resources_of(self, kind: str) -> list[Resource]:
        entries = {"Model": self.models, "Pipeline": self.pipelines,
                   "Experiment": self.experiments}[kind]
        out: list[Resource] = []
        for i, entry in enumerate(entries):
            where = f"{kind.lower()}s[{i}]"
            if entry.manifest is not None:
                path = Path(entry.manifest)
                docs = [r for r in load_file(path if path.is_absolute() else ROOT / path)
                        if r.kind == kind]
                if entry.name is not None:
                    docs = [r for r in docs if r.name == entry.name]
                if not docs:
                    raise SpecError(f"{where}.manifest: {entry.manifest} has no {kind}"
                                    + (f" named {entry.name}" if entry.name else ""))
                out += docs
            else:  # inline: ResourceEntry._one_source made sure of both name and spec
                assert entry.name is not None and entry.spec is not None
                spec = KINDS[kind].parse(entry.spec, f"{where}.spec")
                out.append(Resource(kind, entry.name, spec))
        names = [r.name for r in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"{kind.lower()}s: duplicate name(s) {', '.join(dupes)}")
        return out


ServerEntry.model_rebuild()


def _check_services(key: str, services: dict, known: Collection[str], verb: str) -> None:
    """Refuse a service the platform does not run, saying what to set instead."""
    for service in services:
        if service in MERGED_SERVICES:
            why, instead = MERGED_SERVICES[service]
            raise ValueError(f"{key}.{service}: {why}; {verb} {key}.{instead} instead")
        if service not in known:
            raise ValueError(f"{key}.{service}: unknown service; known: {', '.join(known)}")


def parse(values: dict[str, Any]) -> StackConfig:
    """Validate a {key: value} mapping (keys without the `core2:` prefix)."""
    try:
        return StackConfig.model_validate(values)
    except ValidationError as e:
        raise SpecError(describe(e, "config")) from None


def read(config) -> StackConfig:
    """From a `pulumi.Config("core2")`; structured values arrive as JSON strings."""
    values = {}
    for key, field in StackConfig.model_fields.items():
        raw = config.get(key)
        if raw is None:
            continue
        if field.annotation is str or field.annotation == str | None:
            values[key] = raw
        else:
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw  # let validation name the field and the expected type
    return parse(values)


def project_defaults() -> dict[str, Any]:
    """The defaults Pulumi.yaml declares, as the Pulumi CLI applies them to every stack."""
    import yaml

    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text()).get("config") or {}
    return {k: d["default"] for k, d in declared.items() if "default" in d}


def stack_values(stack_file: str | Path) -> dict[str, Any]:
    """The `core2:*` values of a stacks/Pulumi.<stack>.yaml file, prefix removed."""
    import yaml

    data = yaml.safe_load(Path(stack_file).read_text()) or {}
    prefix = f"{PROJECT}:"
    return {k[len(prefix):]: v for k, v in (data.get("config") or {}).items()
            if k.startswith(prefix)}
