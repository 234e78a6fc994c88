"""What Envoy should route, as plain data: the scheduler builds a Snapshot from its state and
the xDS server turns it into Envoy resources. Kept free of protobuf so it is easy to test."""

from dataclasses import dataclass, field


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


@dataclass
class Snapshot:
    backends: dict[str, Backend] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    def referenced_backends(self) -> set[str]:
        names = set()
        for r in self.routes:
            names.update(t.backend for t in r.targets)
            if r.mirror:
                names.add(r.mirror.backend)
        return names
