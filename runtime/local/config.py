"""Local platform settings: ports and servers, from defaults or a YAML file (`core2 up -c`)."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.local.supervision import RestartPolicy
from runtime.scheduler.autoscale import AutoscaleConfig
from runtime.specs.common import SpecError, check_name, describe
from runtime.specs.fetch import FetchRules
from runtime.specs.server import ServerSpec
from runtime.tracing import TracingConfig


class LocalServer(ServerSpec):
    name: str = Field(min_length=1)
    # What this server's agents may fetch. Local paths: the samples, the folders of manifests
    # applied with `core2 apply`/`load`, and fetch.localRoots (relative to the config file).
    fetch: FetchRules = FetchRules(localRoots=[])


class LocalAutoscaling(AutoscaleConfig):
    """Config key `autoscaling`: the scheduler's settings, and how often agents report load."""

    loadReportSeconds: float = Field(default=2.0, gt=0)

    def scheduler_args(self) -> list[str]:
        return ["--autoscale-json", self.model_dump_json(exclude={"loadReportSeconds"})]


class Ports(BaseModel):
    """Fixed ports for `core2 up` (Seldon's where it has one); 0 picks a free port."""

    model_config = ConfigDict(extra="forbid")
    envoy: int = 9000
    envoyAdmin: int = 9901
    schedulerApi: int = 9004
    schedulerAgent: int = 9005
    schedulerXds: int = 9002
    schedulerMetrics: int = 9006
    kafka: int = 9092
    pipelineGatewayHttp: int = 9010
    pipelineGatewayGrpc: int = 9011
    controllerHealth: int = 9007
    feedbackHttp: int = 9012   # the scheduler's feedback service (adaptive experiments)
    feedbackGrpc: int = 9013


class EnvoyTls(BaseModel):
    """Serve inference over TLS (HTTPS and gRPC with TLS) on the Envoy port."""

    model_config = ConfigDict(extra="forbid")
    certFile: Path
    keyFile: Path
    # what the engine's model calls and `core2 model infer` verify Envoy with (default:
    # certFile, right for a self-signed certificate)
    caFile: Path | None = None

    @property
    def ca(self) -> Path:
        return self.caFile or self.certFile


class LocalKube(BaseModel):
    """Config key `kube` (or `core2 up --kube KUBECONFIG`): a controller serves a cluster's
    Seldon custom resources with this local platform."""

    model_config = ConfigDict(extra="forbid")
    kubeconfig: Path
    context: str | None = None
    namespaces: list[str] = []          # empty: every namespace
    # a relative plain storageUri in a CR is taken from here (kubectl keeps no manifest
    # folder); relative to the config file, default the folder `core2 up` runs in
    storageBase: Path | None = None
    leaseNamespace: str = "default"
    leaseSeconds: int = Field(default=15, ge=3)


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ports: Ports = Ports()
    servers: list[LocalServer] = [LocalServer(name="mlserver")]
    kafkaBootstrap: str | None = None   # use an existing Kafka instead of starting a broker
    # the broker started when kafkaBootstrap is unset: the embedded Tansu (memory only), or
    # Apache Kafka from the jars `scripts/tools` fetched (data in <run-dir>/kafka)
    kafkaBroker: Literal["embedded", "apache"] = "embedded"
    kafkaPrefix: str = "seldon"
    kafkaNamespace: str = "default"
    # consumer fetch.wait.max.ms; unset: by broker (runtime.kafka.FETCH_WAIT_MS). On the
    # embedded broker it bounds each hop's latency, and lower costs it CPU while idle.
    kafkaFetchWaitMs: int | None = Field(default=None, ge=1)
    pipelines: bool = True              # start the broker and the dataflow services
    # A replica whose agent is away this long is forgotten; its models move to other replicas.
    replicaLostAfterSeconds: float = Field(default=10.0, gt=0)
    envoyTls: EnvoyTls | None = None
    # body size (Envoy and the pipeline gateway) and per-model overload limits (Envoy)
    limits: InferenceLimits = DEFAULT_LIMITS
    supervision: RestartPolicy = RestartPolicy()
    kube: LocalKube | None = None
    tracing: TracingConfig | None = None  # OpenTelemetry, off when absent
    autoscaling: LocalAutoscaling = LocalAutoscaling()

    def fetch_wait_ms(self) -> int:
        from runtime.kafka import FETCH_WAIT_MS

        if self.kafkaFetchWaitMs:
            return self.kafkaFetchWaitMs
        # an existing Kafka named by kafkaBootstrap is taken for a real one
        kind = "apache" if self.kafkaBootstrap else self.kafkaBroker
        return FETCH_WAIT_MS[kind]

    @classmethod
    def load(cls, path: str | Path | None) -> "LocalConfig":
        if path is None:
            cfg = cls()
        else:
            try:
                cfg = cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
            except ValidationError as e:
                raise SpecError(describe(e, str(path))) from None
            except (OSError, yaml.YAMLError) as e:
                raise SpecError(f"{path}: {e}") from None
        base = Path(path).parent if path else Path.cwd()
        for s in cfg.servers:
            check_name(s.name, f"servers[{s.name}].name")
            s.fetch.localRoots = [(base / r).resolve() for r in s.fetch.localRoots or []]
        if cfg.kube is not None:
            cfg.kube.kubeconfig = (base / cfg.kube.kubeconfig).resolve()
            cfg.kube.storageBase = (base / (cfg.kube.storageBase or ".")).resolve()
        if cfg.envoyTls is not None:
            cfg.envoyTls = _resolved(cfg.envoyTls, Path(path).parent if path else Path.cwd())
        return cfg


def _resolved(tls: EnvoyTls, base: Path) -> EnvoyTls:
    """Paths relative to the config file; each must be a readable file."""
    files = {}
    for field in ("certFile", "keyFile", "caFile"):
        value = getattr(tls, field)
        if value is None:
            continue
        full = (base / value).resolve()
        if not full.is_file():
            raise SpecError(f"envoyTls.{field}: {value}: no such file")
        files[field] = full
    return EnvoyTls(**files)
