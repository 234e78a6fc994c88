"""What Envoy should route, derived from the scheduler's state (see routes.Snapshot) and kept
between changes: a change looks again only at the models it touched (`Routing.touch`), and at
the models routed through a server replica whose address changed."""

from collections import ChainMap, Counter, defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from runtime.scheduler import state as st
from runtime.scheduler.routes import (
    FEEDBACK,
    Backend,
    ChangeLog,
    Endpoint,
    Route,
    Snapshot,
    Target,
)

if TYPE_CHECKING:
    from runtime.scheduler.adaptive import Adaptive
    from runtime.scheduler.models import ModelManager
    from runtime.scheduler.tables import Experiments, Pipelines

PIPELINE_GATEWAY = "pipelinegateway"


class Sources(Protocol):
    """What routing is derived from (the Scheduler; tests and benches pass stand-ins)."""

    models: "ModelManager"
    pipelines: "Pipelines"
    experiments: "Experiments"
    adaptive: "Adaptive"
    pipeline_gateway: Endpoint | None
    feedback: Endpoint | None


def model_backends(m: st.Model, replicas: dict[str, st.Replica],
                   deps: set[str] | None = None) -> list[tuple[Backend, Target]]:
    """Where a model's traffic goes: the live version, plus a newer version that is coming up
    (traffic shared while it rolls out), each weighted by its serving replicas. An evicted
    replica's endpoint is its agent, which reloads the model and forwards. The backend is
    named after its replicas, so every model on the same ones shares one Envoy cluster.
    `deps` collects the replica keys the routed versions are served on."""
    out: list[tuple[Backend, Target]] = []
    live = m.live_version()
    for v in _routed_versions(m, live):
        eps, parts = [], [v.server]
        for idx in v.serving_replicas():
            key = f"{v.server}/{idx}"
            if deps is not None:
                deps.add(key)
            r = replicas.get(key)
            if r is None:
                continue
            evicted = v.replicas[idx].evicted
            eps.append(Endpoint(r.host, r.agent_http_port if evicted else r.server_http_port,
                                r.agent_grpc_port if evicted else r.server_grpc_port))
            parts.append(f"{idx}a" if evicted else str(idx))
        if eps:
            out.append((Backend("_".join(parts), tuple(eps)),
                        Target("_".join(parts), len(eps), v.internal_name)))
    return out


def _routed_versions(m: st.Model, live: st.ModelVersion | None) -> list[st.ModelVersion]:
    return [v for v in m.versions if v.state not in (st.TERMINATING, st.TERMINATED)
            and (v is live or (v is m.latest and v.serving_replicas()))]


def _default_route(name: str, targets: tuple[Target, ...]) -> Route:
    pipeline = name.removesuffix(".pipeline")
    prefix = f"/v2/pipelines/{pipeline}" if pipeline != name else f"/v2/models/{name}"
    return Route(name, targets, (prefix,))


def _address(r: st.Replica) -> tuple:
    return (r.host, r.server_http_port, r.server_grpc_port, r.agent_http_port,
            r.agent_grpc_port)


class Routing:
    """The routing snapshot of a scheduler (`hub`), updated in O(changed): per model, its
    backends and targets are kept and recomputed only when the model was touched (every
    change to a model calls `touch`) or a replica it is served on got a new address.
    Pipelines and experiments (few) are recomputed on every snapshot."""

    def __init__(self, hub: Sources):
        self.hub = hub
        self.generation = 0
        self.log = ChangeLog()
        self._full = True                                  # first snapshot: every model
        self._dirty: set[str] = set()
        self._targets: dict[str, tuple[Target, ...]] = {}  # model -> its targets (routed)
        self._model_backends: dict[str, tuple[Backend, ...]] = {}
        self._uses: Counter[str] = Counter()               # backend -> models using it
        self._backends: dict[str, Backend] = {}
        self._deps: dict[str, set[str]] = {}               # model -> replica keys it uses
        self._on_replica: dict[str, set[str]] = defaultdict(set)
        self._addresses: dict[str, tuple] = {}             # replica key -> address seen
        self._routes: dict[str, Route] = {}
        self._extra: set[str] = set()  # names routed by pipelines/experiments last time
        self._rated: set[str] = set()  # candidates of adaptive experiments last time

    def touch(self, model: str) -> None:
        self._dirty.add(model)

    def snapshot(self) -> Snapshot:
        replicas, models = self.hub.models.replicas, self.hub.models.models
        self._check_replicas(replicas)
        dirty = set(models) | set(self._targets) if self._full else self._dirty
        self._full, self._dirty = False, set()
        retargeted = {n for n in dirty if self._update_model(n, models.get(n), replicas)}
        extra = self._extra_routes()
        feedback = self.hub.feedback
        # Only names feedback may be sent under get the feedback routes (they cost ~150 bytes
        # and 40 % more encoding per route): adaptive experiments' own and their candidates'.
        rated = self.hub.adaptive.candidate_routes() if feedback is not None else set()
        changed = set()
        for name in retargeted | self._extra | set(extra) | (rated ^ self._rated):
            route = extra.get(name)
            if route is None and name in self._targets:
                route = _default_route(name, self._targets[name])
            if route is not None and feedback is not None and (route.experiment or name in rated):
                route = replace(route, feedback=True)
            if route != self._routes.get(name):
                changed.add(name)
                if route is None:
                    del self._routes[name]
                else:
                    self._routes[name] = route
        self._extra, self._rated = set(extra), rated
        self.generation += 1
        self.log.add(self.generation, changed)
        backends = dict(self._backends)
        if self.hub.pipeline_gateway and self.hub.pipelines.docs:
            backends[PIPELINE_GATEWAY] = Backend(PIPELINE_GATEWAY, (self.hub.pipeline_gateway,),
                                                 model=False)
        if feedback is not None:
            backends[FEEDBACK] = Backend(FEEDBACK, (feedback,), model=False)
        return Snapshot(backends, dict(self._routes), self.generation, self.log)

    def _check_replicas(self, replicas: dict[str, st.Replica]) -> None:
        """A replica that came back with other ports, or went: its models look again."""
        for key, r in replicas.items():
            if self._addresses.get(key) != (address := _address(r)):
                self._addresses[key] = address
                self._dirty |= self._on_replica.get(key, set())
        for key in [k for k in self._addresses if k not in replicas]:
            del self._addresses[key]
            self._dirty |= self._on_replica.get(key, set())

    def _update_model(self, name: str, m: st.Model | None,
                      replicas: dict[str, st.Replica]) -> bool:
        """Recompute one model's backends and targets; True if its targets changed."""
        for b in self._model_backends.pop(name, ()):
            self._uses[b.name] -= 1
            if not self._uses[b.name]:
                del self._uses[b.name], self._backends[b.name]
        for key in self._deps.pop(name, ()):
            self._on_replica[key].discard(name)
        old = self._targets.pop(name, ())
        if m is None or m.deleted:
            return bool(old)
        deps: set[str] = set()
        pairs = model_backends(m, replicas, deps)
        for b, _ in pairs:
            self._backends[b.name] = b
            self._uses[b.name] += 1
        for key in deps:
            self._on_replica[key].add(name)
        self._deps[name] = deps
        self._model_backends[name] = tuple(b for b, _ in pairs)
        if pairs:
            self._targets[name] = tuple(t for _, t in pairs)
        return self._targets.get(name, ()) != old

    def _extra_routes(self) -> dict[str, Route]:
        """Routes of pipelines and experiments (an experiment's default takes over its
        model's or pipeline's own route), recomputed whole: there are few."""
        hub = self.hub
        pipes: dict[str, tuple[Target, ...]] = {}
        if hub.pipeline_gateway and hub.pipelines.docs:
            for p in hub.pipelines.docs:
                # The gateway learns the pipeline from seldon-internal-model, like a model server.
                pipes[f"{p}.pipeline"] = (Target(PIPELINE_GATEWAY, 1, f"{p}.pipeline"),)
        experiment_routes, defaults = hub.experiments.routes(ChainMap(pipes, self._targets))
        out = {name: _default_route(name, ts) for name, ts in pipes.items()
               if name not in defaults}
        out.update((r.name, r) for r in experiment_routes)
        return out


def build(hub: Sources) -> Snapshot:
    """A snapshot from scratch (tests, benchmarks)."""
    return Routing(hub).snapshot()
