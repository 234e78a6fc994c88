"""What Envoy should route, as plain data: the scheduler builds a Snapshot from its state and
the xDS server turns it into Envoy resources. Kept free of protobuf so it is easy to test."""

from bisect import bisect_right
from dataclasses import dataclass, field

FEEDBACK = "feedback"  # the backend of the scheduler's feedback service (scheduler.feedback)


@dataclass(frozen=True)
class Endpoint:
    host: str
    http_port: int
    grpc_port: int


@dataclass(frozen=True)
class Backend:
    """One upstream: a set of server replicas (each at its model server, or at its agent while
    the model is evicted there), or the pipeline gateway. Every model version on the same
    replicas shares it; the route names the version in `seldon-internal-model`."""

    name: str                    # cluster base name, e.g. "mlserver_0_1"
    endpoints: tuple[Endpoint, ...]
    model: bool = True           # model servers get the overload limits; the pipeline
                                 # gateway, shared by every pipeline, bounds its own work


@dataclass(frozen=True)
class Target:
    backend: str                 # Backend.name
    weight: int = 1
    internal_name: str = ""      # sent as `seldon-internal-model` so the server picks the
                                 # version ("iris_1", "chain.pipeline"); also the sticky label


@dataclass(frozen=True)
class Route:
    """Requests naming `name` (seldon-model header, or the REST path) go to `targets`."""

    name: str                          # "iris", "p.pipeline", "exp.experiment"
    targets: tuple[Target, ...]
    path_prefixes: tuple[str, ...] = ()  # e.g. "/v2/models/iris"
    mirror: Target | None = None
    mirror_percent: int = 0
    sticky: bool = False               # honour `x-seldon-route` sent back by the client
    experiment: str = ""               # adaptive experiment: Envoy logs who served each request
    feedback: bool = False             # /feedback goes to the scheduler's feedback service


class ChangeLog:
    """Which names changed at which generation, so a reader that saw generation g finds what
    changed after it without comparing everything. Old entries are dropped once the log
    outgrows `keep`; a reader from before them gets None (compare everything)."""

    def __init__(self, keep: int = 4096):
        self.keep = keep
        self.floor = 0                 # entries up to this generation are gone
        self._gens: list[int] = []
        self._names: list[str] = []

    def add(self, generation: int, names) -> None:
        for n in names:
            self._gens.append(generation)
            self._names.append(n)
        if len(self._gens) > 2 * self.keep:
            self.floor = self._gens[len(self._gens) - self.keep]
            cut = bisect_right(self._gens, self.floor)
            del self._gens[:cut], self._names[:cut]

    def since(self, start: int, end: int) -> set[str] | None:
        """Names changed after generation `start` up to `end`; None if the log no longer
        reaches back to `start`."""
        start, end = min(start, end), max(start, end)
        if start < self.floor:
            return None
        return set(self._names[bisect_right(self._gens, start):bisect_right(self._gens, end)])


@dataclass
class Snapshot:
    backends: dict[str, Backend] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)   # by Route.name
    generation: int = 0
    log: ChangeLog | None = None   # route names changed per generation (shared by snapshots
                                   # of one scheduler)

    def changed_since(self, other: "Snapshot | None") -> set[str] | None:
        """Route names that differ from `other`, when both come from the same log and it
        reaches back far enough; else None (compare every route)."""
        if other is None or self.log is None or other.log is not self.log:
            return None
        return self.log.since(other.generation, self.generation)

    def referenced_backends(self) -> set[str]:
        names: set[str] = set()
        for r in self.routes.values():
            names.update(t.backend for t in r.targets)
            if r.mirror:
                names.add(r.mirror.backend)
        return names
