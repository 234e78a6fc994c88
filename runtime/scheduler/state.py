"""The scheduler's in-memory model of servers, replicas and model versions (Seldon's states)."""

from dataclasses import asdict, dataclass, field

from runtime.specs import ModelSpec

# Model version states
PROGRESSING = "ModelProgressing"
AVAILABLE = "ModelAvailable"
FAILED = "ModelFailed"
SCHEDULE_FAILED = "ScheduleFailed"
TERMINATING = "ModelTerminating"
TERMINATED = "ModelTerminated"
SCALED_DOWN = "ModelScaledDown"

# Replica states
LOAD_REQUESTED = "LoadRequested"
LOADING = "Loading"
LOADED = "Loaded"
R_AVAILABLE = "Available"
LOAD_FAILED = "LoadFailed"
UNLOAD_REQUESTED = "UnloadRequested"
UNLOADING = "Unloading"
UNLOADED = "Unloaded"
UNLOAD_FAILED = "UnloadFailed"
SERVING = {LOADED, R_AVAILABLE}
LEAVING = {UNLOAD_REQUESTED, UNLOADING, UNLOADED}


@dataclass
class Replica:
    """One model-server replica, as its agent described itself."""

    server: str
    idx: int
    capabilities: list[str]
    memory: int
    over_commit: int
    host: str
    server_http_port: int
    server_grpc_port: int
    agent_http_port: int
    agent_grpc_port: int
    connected: bool = False
    available_memory: int = 0
    # Going away (preStop): placement skips it. Not persisted, and a reconnect (a new
    # Replica from the agent's Subscribe) starts undrained: the pod came back.
    draining: bool = False

    @property
    def key(self) -> str:
        return f"{self.server}/{self.idx}"

    @property
    def capacity(self) -> int:
        """What placement may fill: memory plus the over-commit allowance."""
        return self.memory * (100 + self.over_commit) // 100

    def to_doc(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("connected", "draining")}


@dataclass
class ReplicaState:
    state: str
    reason: str = ""
    evicted: bool = False


@dataclass
class ModelVersion:
    model: str
    version: int
    spec: ModelSpec
    state: str = PROGRESSING
    reason: str = ""
    server: str = ""
    replicas: dict[int, ReplicaState] = field(default_factory=dict)
    # set by the model autoscaler (between minReplicas and maxReplicas), with why
    scaled: int | None = None
    scale_reason: str = ""

    @property
    def internal_name(self) -> str:
        return f"{self.model}_{self.version}"

    def serving_replicas(self) -> list[int]:
        return sorted(i for i, r in self.replicas.items() if r.state in SERVING)

    def available_replicas(self) -> list[int]:
        return sorted(i for i, r in self.replicas.items() if r.state == R_AVAILABLE)

    def to_doc(self) -> dict:
        return {
            "version": self.version, "spec": self.spec.model_dump(exclude_none=True),
            "state": self.state, "reason": self.reason, "server": self.server,
            # (by hand: dataclasses.asdict was most of a store write at 10,000 models)
            "replicas": {str(i): {"state": r.state, "reason": r.reason, "evicted": r.evicted}
                         for i, r in self.replicas.items()},
            **({"scaled": self.scaled, "scaleReason": self.scale_reason}
               if self.scaled is not None else {}),
        }

    @classmethod
    def from_doc(cls, model: str, doc: dict) -> "ModelVersion":
        return cls(model=model, version=doc["version"], spec=ModelSpec.model_validate(doc["spec"]),
                   state=doc["state"], reason=doc["reason"], server=doc["server"],
                   replicas={int(i): ReplicaState(**r) for i, r in doc["replicas"].items()},
                   scaled=doc.get("scaled"), scale_reason=doc.get("scaleReason", ""))


@dataclass
class Model:
    name: str
    versions: list[ModelVersion] = field(default_factory=list)  # oldest first
    deleted: bool = False

    @property
    def latest(self) -> ModelVersion:
        return self.versions[-1]

    def live_version(self) -> ModelVersion | None:
        """The newest version that is Available: the one traffic goes to."""
        for v in reversed(self.versions):
            if v.state == AVAILABLE:
                return v
        return None

    def to_doc(self) -> dict:
        return {"deleted": self.deleted, "versions": [v.to_doc() for v in self.versions]}

    def fingerprint(self) -> tuple:
        """Everything to_doc holds, cheaply comparable: tells an unchanged model apart
        without encoding it (an agent's reconnect touches every model it holds)."""
        return (self.deleted, tuple(
            (v.version, v.spec, v.state, v.reason, v.server, v.scaled, v.scale_reason,
             tuple((i, r.state, r.reason, r.evicted) for i, r in v.replicas.items()))
            for v in self.versions))

    @classmethod
    def from_doc(cls, name: str, doc: dict) -> "Model":
        return cls(name=name, deleted=doc["deleted"],
                   versions=[ModelVersion.from_doc(name, v) for v in doc["versions"]])
