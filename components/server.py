"""Server: a StatefulSet of model-server replicas (MLServer or Triton), each with its agent.

The agent registers the replica with the scheduler (capabilities, memory, over-commit), pulls
artifacts into the cache and loads them through the server's V2 repository API; both
containers share the model repository volume.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

from components import claims
from components.k8s import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Resources,
    disruption_budget,
    env_from_field,
    http_probe,
    metadata,
    scrape_annotations,
    selector,
    spread,
    tmp_volume,
    with_pull_secrets,
)
from components.network import SERVER_PORTS, SERVER_ROLE
from components.objects import register
from components.scheduler import AGENT_PORT
from components.scheduler import NAME as SCHEDULER
from components.secrets import scheduler_token_env
from components.seldon import seldon_object
from runtime.controller.kube import REPLICAS_FROM
from runtime.specs.server import DEFAULT_CAPABILITIES
from runtime.tracing import TracingConfig

REPOSITORY, CACHE = "/mnt/models", "/mnt/cache"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
SERVER_RESOURCES = Resources("500m", "1Gi", "2", "4Gi")
AGENT_RESOURCES = Resources("100m", "128Mi", "500m", "512Mi")
# storageSecret protocols -> the fsspec protocol whose options the Secret's keys become
STORAGE_PROTOCOLS = {"s3": "S3", "gs": "GS", "az": "AZ"}
RESERVED_VOLUMES = {"models", "cache", "tmp"}
RESERVED_MOUNTS = {REPOSITORY, CACHE, "/tmp"}
GRACE_SECONDS = 60  # for the containers to stop once the preStop drain is over
DRAIN_DONE = f"{REPOSITORY}/.core2-drained"  # on the volume both containers share
AUTOSCALING_KEYS = {"minReplicas", "maxReplicas"}


@dataclass
class ServerArgs:
    name: str
    namespace: str
    image: str  # the runtime image (agent, and the MLServer container)
    type: Literal["mlserver", "triton"] = "mlserver"
    replicas: int = 1
    capabilities: list[str] | None = None  # replaces the type's defaults
    extra_capabilities: list[str] = field(default_factory=list)
    memory: str = "1Gi"  # model memory one replica offers to the scheduler
    over_commit: int = 10  # percent
    gpu: int = 0  # nvidia.com/gpu per replica
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    cache_size: str | None = None  # PVC per replica for the artifact cache; None: emptyDir
    storage_class: str | None = None
    triton_image: str = TRITON_IMAGE
    image_pull_policy: str = "IfNotPresent"
    server_resources: dict | None = None
    agent_resources: dict | None = None
    # {minReplicas, maxReplicas, cpuUtilization}: a CPU HorizontalPodAutoscaler. Each pod it
    # removes drains first (preStop), but CPU says nothing of whether the models fit on fewer
    # replicas: that is `autoscaling`.
    hpa: dict | None = None
    # {minReplicas, maxReplicas}: the scheduler's server autoscaling (README "Autoscaling").
    # A Seldon Server CR carries the bounds to the scheduler (through the controller, which
    # sets the StatefulSet's replicas to the scheduler's count); Pulumi creates the
    # StatefulSet with `replicas` (kept within the bounds) and leaves its count alone after.
    autoscaling: dict | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    # Secret (key `token`) with the scheduler's bearer token, when the Platform requires one
    scheduler_token_secret: str | None = None
    tracing: TracingConfig | None = None  # MLServer sends its spans there
    # Artifact-store credentials, for the agent (which fetches storageUris):
    env: list[dict] = field(default_factory=list)  # extra EnvVars
    env_from: list[dict] = field(default_factory=list)  # extra EnvFromSources
    volumes: list[dict] = field(default_factory=list)  # extra pod volumes
    volume_mounts: list[dict] = field(default_factory=list)  # mounted into the agent
    # on the server's own ServiceAccount: IRSA (eks.amazonaws.com/role-arn), GKE Workload
    # Identity (iam.gke.io/gcp-service-account)
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    # {name, protocol: s3|gs|az}: a Secret whose keys are fsspec storage options
    # (endpoint_url, key, secret, ...) for that protocol
    storage_secret: dict | None = None
    # preStop: how long the agent may take moving the replica's models to other replicas
    drain_seconds: int = 120

    @property
    def service_account(self) -> str:
        return f"core2-server-{self.name}"

    @property
    def replicated(self) -> bool:
        return self.replicas > 1 or bool(self.hpa) or bool(self.autoscaling)

    @property
    def start_replicas(self) -> int:
        """The StatefulSet's first count: `replicas`, within the autoscaling bounds."""
        if not self.autoscaling:
            return self.replicas
        lo, hi = self.autoscaling.get("minReplicas", 1), self.autoscaling["maxReplicas"]
        return min(max(self.replicas, lo), hi)

    def all_capabilities(self) -> list[str]:
        base = self.capabilities if self.capabilities is not None else DEFAULT_CAPABILITIES[
            self.type]
        return sorted(set(base) | set(self.extra_capabilities))


def _server_container(a: ServerArgs) -> dict:
    res = Resources.from_config(a.server_resources, SERVER_RESOURCES)
    if a.gpu:
        res.extra_limits = {"nvidia.com/gpu": str(a.gpu)}
    ports = [{"name": "http", "containerPort": SERVER_PORTS["http"]},
             {"name": "grpc", "containerPort": SERVER_PORTS["grpc"]},
             {"name": "server-metrics", "containerPort": SERVER_PORTS["server-metrics"]}]
    _, tmp_mount = tmp_volume()
    common = {"ports": ports, "resources": res.render(),
              # a slow start (Triton on a GPU node, a large image) gets up to 10 minutes
              # before liveness applies; then a hung server is restarted within a minute
              "startupProbe": http_probe(SERVER_PORTS["http"], "/v2/health/live", period=5,
                                         initial=5, failures=120),
              "readinessProbe": http_probe(SERVER_PORTS["http"], "/v2/health/ready", period=5),
              "livenessProbe": http_probe(SERVER_PORTS["http"], "/v2/health/live", initial=0,
                                          failures=6),
              # the same restricted context as every core2 container (Triton included)
              "securityContext": RESTRICTED_CONTAINER,
              "volumeMounts": [{"name": "models", "mountPath": REPOSITORY}, tmp_mount]}
    # Kubernetes stops a container without a preStop hook at once: the model server waits for
    # the agent's drain to end, so it serves the draining copies until they are replaced.
    common["lifecycle"] = {"preStop": {"exec": {"command": wait_for_drain_command(a)}}}
    if a.type == "triton":
        return {"name": "triton", "image": a.triton_image, "command": ["tritonserver"],
                "args": [f"--model-repository={REPOSITORY}", "--model-control-mode=explicit",
                         f"--http-port={SERVER_PORTS['http']}",
                         f"--grpc-port={SERVER_PORTS['grpc']}",
                         f"--metrics-port={SERVER_PORTS['server-metrics']}"],
                **common}
    if a.tracing:  # MLServer's own spans, continuing Envoy's traces
        common["env"] = [{"name": k, "value": v} for k, v in a.tracing.env().items()]
    return {"name": "mlserver", "image": a.image, "imagePullPolicy": a.image_pull_policy,
            "command": ["python", "-m", "runtime.agent.modelserver"],
            # all interfaces: Envoy and the kubelet's probes reach it on the pod IP
            "args": ["--host", "0.0.0.0", "--repository", REPOSITORY,
                     "--http-port", str(SERVER_PORTS["http"]),
                     "--grpc-port", str(SERVER_PORTS["grpc"]),
                     "--metrics-port", str(SERVER_PORTS["server-metrics"])],
            **common}


def drain_command(a: ServerArgs) -> list[str]:
    """The agent's preStop hook: move this replica's models elsewhere before the pod stops.
    An exec hook gets no $(VAR) expansion, so a shell reads the replica index from the env."""
    return ["sh", "-c", "exec python -m runtime.agent drain "
            f"--scheduler {SCHEDULER}:{AGENT_PORT} --server-name {a.name} "
            f'--replica-idx "$REPLICA_IDX" --timeout {a.drain_seconds} --done-file {DRAIN_DONE}']


def wait_for_drain_command(a: ServerArgs) -> list[str]:
    """The model server's preStop hook: until the agent's drain is done (or its time is up)."""
    return ["sh", "-c", f"i=0; while [ ! -e {DRAIN_DONE} ] && [ $i -lt {a.drain_seconds} ]; "
            "do sleep 1; i=$((i+1)); done"]


def _agent_container(a: ServerArgs) -> dict:
    _, tmp_mount = tmp_volume()
    return {
        "name": "agent", "image": a.image, "imagePullPolicy": a.image_pull_policy,
        "command": ["python", "-m", "runtime.agent"],
        "args": ["--scheduler", f"{SCHEDULER}:{AGENT_PORT}", "--server-name", a.name,
                 "--replica-idx", "$(REPLICA_IDX)",
                 "--capabilities", ",".join(a.all_capabilities()),
                 "--memory", a.memory, "--over-commit", str(a.over_commit),
                 "--host", "$(POD_IP)",
                 "--server-http-port", str(SERVER_PORTS["http"]),
                 "--server-grpc-port", str(SERVER_PORTS["grpc"]),
                 "--http-port", str(SERVER_PORTS["agent-http"]),
                 "--grpc-port", str(SERVER_PORTS["agent-grpc"]),
                 "--metrics-port", str(SERVER_PORTS["agent-metrics"]),
                 # per-model counters, read from the server at scrape time
                 "--server-metrics-port", str(SERVER_PORTS["server-metrics"]),
                 "--repository", REPOSITORY, "--cache-dir", CACHE,
                 # Triton: its layout, and Envoy reaches it through the agent's proxy
                 "--server-kind", a.type],
        "env": [
            env_from_field("POD_IP", "status.podIP"),
            # the StatefulSet ordinal, from the pod-index label Kubernetes sets (1.28+)
            env_from_field("REPLICA_IDX", "metadata.labels['apps.kubernetes.io/pod-index']"),
            *scheduler_token_env(a.scheduler_token_secret),
            *a.env,
        ],
        "envFrom": [*storage_env_from(a.storage_secret), *a.env_from],
        "ports": [{"name": "agent-http", "containerPort": SERVER_PORTS["agent-http"]},
                  {"name": "agent-grpc", "containerPort": SERVER_PORTS["agent-grpc"]},
                  {"name": "agent-metrics", "containerPort": SERVER_PORTS["agent-metrics"]}],
        # the agent answers /ready on its metrics port once registered with the scheduler
        "readinessProbe": http_probe(SERVER_PORTS["agent-metrics"], "/ready", period=5),
        "livenessProbe": http_probe(SERVER_PORTS["agent-metrics"], "/live", initial=10,
                                    failures=6),
        "lifecycle": {"preStop": {"exec": {"command": drain_command(a)}}},
        "resources": Resources.from_config(a.agent_resources, AGENT_RESOURCES).render(),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "models", "mountPath": REPOSITORY},
                         {"name": "cache", "mountPath": CACHE}, tmp_mount,
                         *a.volume_mounts],
    }


def storage_env_from(secret: dict | None) -> list[dict]:
    """The Secret's keys as FSSPEC_<PROTOCOL>_<key> variables: fsspec applies them as default
    options of every filesystem of that protocol the agent opens (fsspec.config), so e.g.
    endpoint_url/key/secret point s3:// at MinIO without any code knowing about it."""
    if not secret:
        return []
    return [{"prefix": f"FSSPEC_{STORAGE_PROTOCOLS[secret['protocol']]}_",
             "secretRef": {"name": secret["name"]}}]


def validate(a: ServerArgs) -> None:
    """Refuse what would render a broken pod, naming the stack field."""
    where = f"servers[{a.name}]"
    if a.drain_seconds < 1:
        raise ValueError(f"{where}.drainSeconds: {a.drain_seconds} must be at least 1 "
                         "(the time a replica has to move its models before it stops)")
    validate_autoscaling(a, where)
    if a.type not in DEFAULT_CAPABILITIES:
        raise ValueError(f"{where}.type: {a.type!r} is not one of "
                         f"{', '.join(DEFAULT_CAPABILITIES)}")
    if a.storage_secret is not None:
        if not a.storage_secret.get("name"):
            raise ValueError(f"{where}.storageSecret.name: required")
        if a.storage_secret.get("protocol") not in STORAGE_PROTOCOLS:
            raise ValueError(f"{where}.storageSecret.protocol: "
                             f"{a.storage_secret.get('protocol')!r} is not one of "
                             f"{', '.join(STORAGE_PROTOCOLS)}")
    names = [v.get("name") for v in a.volumes]
    for name in names:
        if name in RESERVED_VOLUMES or names.count(name) > 1 or not name:
            raise ValueError(f"{where}.volumes: name {name!r} is missing, repeated or "
                             f"reserved ({', '.join(sorted(RESERVED_VOLUMES))})")
    for m in a.volume_mounts:
        if m.get("name") not in names:
            raise ValueError(f"{where}.volumeMounts: {m.get('name')!r} is not one of the "
                             "server's volumes")
        if m.get("mountPath") in RESERVED_MOUNTS:
            raise ValueError(f"{where}.volumeMounts: {m.get('mountPath')} is used by core2")


def validate_autoscaling(a: ServerArgs, where: str) -> None:
    if a.autoscaling is None:
        return
    if a.hpa:
        raise ValueError(f"{where}.autoscaling and {where}.hpa: give one, not both (hpa: a CPU "
                         "HorizontalPodAutoscaler; autoscaling: the scheduler's, by the "
                         "replicas the models want); both would set the StatefulSet's replicas")
    unknown = sorted(set(a.autoscaling) - AUTOSCALING_KEYS)
    if unknown:
        raise ValueError(f"{where}.autoscaling: unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(AUTOSCALING_KEYS))}")
    lo, hi = a.autoscaling.get("minReplicas", 1), a.autoscaling.get("maxReplicas")
    if not isinstance(hi, int) or hi < 1:
        raise ValueError(f"{where}.autoscaling.maxReplicas: {hi!r} must be a whole number of at "
                         "least 1")
    if not isinstance(lo, int) or not 1 <= lo <= hi:
        raise ValueError(f"{where}.autoscaling.minReplicas: {lo!r} must be a whole number from "
                         f"1 to maxReplicas ({hi}) (servers do not scale to zero)")


def server_spec(a: ServerArgs) -> dict:
    """The Seldon Server spec of an autoscaled server: what the scheduler needs of it (bounds,
    type, capabilities, memory), the same values its agents register with."""
    assert a.autoscaling, "server_spec: for autoscaled servers only"
    return {"serverConfig": a.type, "replicas": a.start_replicas,
            "minReplicas": a.autoscaling.get("minReplicas", 1),
            "maxReplicas": a.autoscaling["maxReplicas"],
            "capabilities": a.all_capabilities(), "memory": a.memory,
            "overCommitPercentage": a.over_commit}


def render(a: ServerArgs) -> list[dict]:
    validate(a)
    tmp, _ = tmp_volume()
    volumes = [{"name": "models", "emptyDir": {}}, tmp, *a.volumes]
    claims = []
    if a.cache_size:
        claim: dict[str, Any] = {"metadata": {"name": "cache"},
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": a.cache_size}}}}
        if a.storage_class:
            claim["spec"]["storageClassName"] = a.storage_class
        claims.append(claim)
    else:
        volumes.append({"name": "cache", "emptyDir": {}})
    pod_labels = {**selector("server", a.name), **SERVER_ROLE}
    pod_spec = {
        # its own account, so cloud identities (IRSA, Workload Identity) are per server
        "serviceAccountName": a.service_account,
        "automountServiceAccountToken": False,
        # no <SERVICE>_PORT variables: they could set CORE2_* settings
        "enableServiceLinks": False,
        "securityContext": RESTRICTED_POD,
        # the preStop drain, then the containers' own shutdown
        "terminationGracePeriodSeconds": a.drain_seconds + GRACE_SECONDS,
        "containers": [_server_container(a), _agent_container(a)],
        "volumes": volumes,
    }
    if a.replicated:
        pod_spec["topologySpreadConstraints"] = spread(selector("server", a.name))
    if a.node_selector:
        pod_spec["nodeSelector"] = dict(a.node_selector)
    tolerations = list(a.tolerations)
    if a.gpu and not any(t.get("key") == "nvidia.com/gpu" for t in tolerations):
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists",
                            "effect": "NoSchedule"})
    if tolerations:
        pod_spec["tolerations"] = tolerations
    statefulset: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata(a.name, a.namespace, "server", a.name),
        "spec": {
            "serviceName": a.name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector("server", a.name)},
            "template": {"metadata": {"labels": pod_labels,
                                      "annotations": scrape_annotations(
                                          SERVER_PORTS["agent-metrics"])},
                         "spec": pod_spec},
            "volumeClaimTemplates": claims,
        },
    }
    headless = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(a.name, a.namespace, "server", a.name),
        "spec": {"clusterIP": "None", "selector": selector("server", a.name),
                 "ports": [{"name": n, "port": p, "targetPort": p}
                           for n, p in SERVER_PORTS.items()]},
    }
    if not a.hpa:  # with an HPA, the autoscaler owns the replica count
        statefulset["spec"]["replicas"] = a.start_replicas
    if a.autoscaling:
        statefulset["metadata"]["annotations"] = dict([REPLICAS_FROM])
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": metadata(a.service_account, a.namespace, "server", a.name,
                                    annotations=dict(a.service_account_annotations) or None),
               "automountServiceAccountToken": False}
    out: list[dict] = [account, headless, statefulset]
    if a.replicated:  # node drains take one replica at a time; its models stay served
        out.append(disruption_budget(a.name, a.namespace, "server", selector("server", a.name),
                                     a.name))
    if a.hpa:
        out.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(a.name, a.namespace, "server", a.name),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                   "name": a.name},
                "minReplicas": int(a.hpa.get("minReplicas", a.replicas)),
                "maxReplicas": int(a.hpa["maxReplicas"]),
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization",
                    "averageUtilization": int(a.hpa.get("cpuUtilization", 70))}}}],
            },
        })
    return out


class Server(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServerArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("core2:index:Server", name, None, opts)
        self.args = args
        child = pulumi.ResourceOptions(parent=self)
        manifests = with_pull_secrets(render(args), args.image_pull_secrets)
        sts_key = f"StatefulSet/{args.name}"
        # volumeClaimTemplates are immutable: a change would replace the StatefulSet (every
        # replica, and its cache volumes). Pulumi keeps the old templates; the claim guard
        # resizes the claims in place or refuses the change, saying what to do.
        # An autoscaled server's count is the scheduler's (set by the controller): Pulumi
        # sets it at creation only, so `pulumi up` neither shows a diff nor scales it back.
        keep_claims = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            ignore_changes=[claims.IGNORED, *(["spec.replicas"] if args.autoscaling else [])]))
        self.objects = {
            f"{m['kind']}/{m['metadata']['name']}": register(
                name, m, keep_claims if f"{m['kind']}/{m['metadata']['name']}" == sts_key
                else child)
            for m in manifests}
        self.statefulset = self.objects[sts_key]
        self.claim_guard = claims.ClaimGuard(
            f"{name}-claims", next(m for m in manifests if m["kind"] == "StatefulSet"),
            f"servers[{args.name}].cacheSize",
            pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset]))
        # the bounds reach the scheduler as a Server CR (the controller applies it), made
        # after the StatefulSet it scales
        self.spec = seldon_object(
            "Server", args.name, server_spec(args), args.namespace,
            pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset])) \
            if args.autoscaling else None
        self.register_outputs({"name": args.name, "replicas": args.replicas,
                               "capabilities": args.all_capabilities()})
