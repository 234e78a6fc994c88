"""The scheduler: owns every resource, persists it, and wires the managers together; they
publish what changed on its event bus, which routes, status streams and dependents follow."""

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from runtime import kinds
from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler import snapshot
from runtime.scheduler import state as st
from runtime.scheduler.adaptive import Adaptive
from runtime.scheduler.autoscale import AutoscaleConfig, Autoscaler
from runtime.scheduler.events import (
    Bus,
    Event,
    ExperimentChanged,
    ModelChanged,
    PipelineChanged,
    ServerChanged,
)
from runtime.scheduler.model_status import model_status, server_status
from runtime.scheduler.models import ModelManager
from runtime.scheduler.routes import Endpoint
from runtime.scheduler.store import Store
from runtime.scheduler.tables import Experiments, NotFound, Pipelines, ServerSpecs
from runtime.scheduler.xds import XdsServer
from runtime.specs import ExperimentSpec, ModelSpec, SpecError
from runtime.specs.manifest import parse_spec
from runtime.specs.pipeline import PipelineSpec
from runtime.specs.server import ServerSpec

log = logging.getLogger(__name__)
Kind = pb.Kind  # pb.MODEL, pb.SERVER, ...
EVENTS: dict[Kind, type[Event]] = {pb.MODEL: ModelChanged, pb.SERVER: ServerChanged,
                                   pb.PIPELINE: PipelineChanged,
                                   pb.EXPERIMENT: ExperimentChanged}
BAD_KIND = "kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT"
ROUTED = (pb.MODEL, pb.PIPELINE, pb.EXPERIMENT)
Owner = ServerSpecs | Experiments | Pipelines | ModelManager  # keeps one kind

__all__ = ["EVENTS", "NotFound", "Scheduler"]


class Scheduler:
    """The managers publish typed events on `bus` (runtime.scheduler.events); the scheduler
    persists models and points routing and used memory at the models that changed."""

    def __init__(self, store: Store, xds: XdsServer, pipeline_gateway: Endpoint | None = None,
                 replica_lost_after_s: float = 10.0, autoscale: AutoscaleConfig | None = None,
                 feedback: Endpoint | None = None):
        self.store, self.xds, self.pipeline_gateway = store, xds, pipeline_gateway
        self.feedback = feedback  # where Envoy sends /feedback (None: not served)
        self.bus = Bus()
        self._tasks: set[asyncio.Task] = set()
        self.adaptive = Adaptive(self)
        self.servers = ServerSpecs(self)
        self.models = ModelManager(self, self.servers, replica_lost_after_s)
        self.pipelines = Pipelines(self, self.models)
        self.experiments = Experiments(self, self.models, self.pipelines, self.adaptive)
        # kept between changes, updated for the models that changed
        self.routing = snapshot.Routing(self)
        self.used_memory = self.models.used_memory
        self._fingerprints: dict[str, tuple] = {}  # each model as last persisted
        for name, doc in store.all("model").items():
            m = self.models.models[name] = st.Model.from_doc(name, doc)
            self._fingerprints[name] = m.fingerprint()
        for key, doc in store.all("replica").items():
            self.models.replicas[key] = st.Replica(**doc)
            self.models.watch_lost(key)  # known from before a restart: must come back
        self.bus.subscribe(ModelChanged, self._model_changed)
        self.autoscaler = Autoscaler(self, self.models, self.servers,
                                     autoscale or AutoscaleConfig())  # start(): in a loop
        self.xds.set_snapshot(self.routing.snapshot())  # Envoy gets the same routes after a restart

    # ---- plumbing used by the managers ---------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _model_changed(self, event: ModelChanged) -> None:
        """Persist the model (or forget it, gone) and have routes and used memory look at it
        again, unless it is as it was last time (then nothing is written or recomputed)."""
        name = event.name
        m = self.models.models.get(name)
        fingerprint = m.fingerprint() if m else None
        if fingerprint is not None and fingerprint == self._fingerprints.get(name):
            return
        self.routing.touch(name)
        self.used_memory.touch(name)
        if m is None or fingerprint is None:
            if self._fingerprints.pop(name, None) is not None:
                self.store.delete("model", name)
            return
        self.store.put("model", name, m.to_doc())
        self._fingerprints[name] = fingerprint

    async def publish_routes(self, changed_model: str | None = None) -> bool:
        """Push the routes to Envoy and wait until it has them (False: not in time).
        `changed_model`: a model changed since its last ModelChanged, whose routes must be
        looked at again before that event is published."""
        if changed_model is not None:
            self.routing.touch(changed_model)
        return await self.xds.wait_applied(self.xds.set_snapshot(self.routing.snapshot()))

    # ---- API -----------------------------------------------------------------------------
    def _table(self, kind: Kind) -> Owner:
        tables: dict[Kind, Owner] = {pb.MODEL: self.models, pb.SERVER: self.servers,
                                     pb.EXPERIMENT: self.experiments, pb.PIPELINE: self.pipelines}
        if kind not in tables:
            raise SpecError(BAD_KIND)
        return tables[kind]

    def apply(self, kind: Kind, name: str, spec_json: str) -> pb.ResourceStatus:
        self._table(kind)  # a known kind
        spec = parse_spec(kinds.Kind.of(kind), name, spec_json)
        self._check_name_free(kind, name)
        if isinstance(spec, ModelSpec):
            self.models.apply(name, spec)
        elif isinstance(spec, ServerSpec):
            self.servers.apply(name, spec)
        elif isinstance(spec, PipelineSpec):
            self.pipelines.apply(name, spec)
        elif isinstance(spec, ExperimentSpec):
            self.experiments.apply(name, spec)
        self.spawn(self.publish_routes())
        return self.status(kind, name)[0]

    def _check_name_free(self, kind: Kind, name: str) -> None:
        """Models, Pipelines and Experiments share one name space: each claims the name in
        the `seldon-model` route (`name`, `name.pipeline`, `name.experiment`) and in
        /v2/models|pipelines/{name}, where an experiment's default takes the name over."""
        if kind not in ROUTED:
            return
        m = self.models.models.get(name)
        owners = {pb.MODEL: m is not None and not m.deleted,
                  pb.PIPELINE: name in self.pipelines.docs,
                  pb.EXPERIMENT: name in self.experiments.docs}
        for other, taken in owners.items():
            if other != kind and taken:
                raise SpecError(f"metadata.name: {name!r} is already a {kinds.Kind.of(other)}; "
                                "Models, Pipelines and Experiments need distinct names (they "
                                "share the seldon-model route)")

    def delete(self, kind: Kind, name: str) -> pb.ResourceStatus:
        self._table(kind).delete(name)
        self.spawn(self.publish_routes())
        items = self.status(kind, name, missing_ok=True)
        if items:
            return items[0]
        return pb.ResourceStatus(kind=kind, name=name, state=kinds.terminated(kind))

    def report_pipeline(self, report: pb.PipelineReport) -> None:
        self.pipelines.report(report)

    def _model_status(self, name: str) -> pb.ResourceStatus:
        m = self.models.models[name]
        return model_status(m, self.models.updated.get(name), self.autoscaler.models.detail(m))

    def _server_status(self, name: str) -> pb.ResourceStatus:
        spec = self.servers.docs.get(name, {}).get("spec")
        return server_status(name, self.models, spec, self.servers.updated.get(name),
                             self.autoscaler.servers.detail(name))

    def status(self, kind: Kind, name: str = "", missing_ok: bool = False
               ) -> list[pb.ResourceStatus]:
        names: Collection[str]
        build: Callable[[str], pb.ResourceStatus]
        if kind == pb.MODEL:
            names, build = self.models.models, self._model_status
        elif kind == pb.SERVER:  # servers known by spec or by a connected agent
            names = set(self.servers.docs) | {r.server for r in self.models.replicas.values()}
            build = self._server_status
        elif kind == pb.PIPELINE:
            names, build = self.pipelines.docs, self.pipelines.status
        elif kind == pb.EXPERIMENT:
            names, build = self.experiments.docs, self.experiments.status
        else:
            raise SpecError(BAD_KIND)
        if not name:
            return [build(n) for n in sorted(names)]
        if name in names:
            return [build(name)]
        if missing_ok:
            return []
        raise NotFound(f"{kinds.Kind.of(kind).lower()} {name!r} not found")
