"""The scheduler hub: owns every resource, persists it, tells Envoy and watchers about changes."""

import asyncio
import logging
import time

from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler import snapshot
from runtime.scheduler import state as st
from runtime.scheduler.adaptive import Adaptive
from runtime.scheduler.autoscale import AutoscaleConfig, Autoscaler
from runtime.scheduler.model_status import model_status, server_status
from runtime.scheduler.models import ModelManager
from runtime.scheduler.placement import UsedMemory
from runtime.scheduler.routes import Endpoint
from runtime.scheduler.store import Store
from runtime.scheduler.tables import Experiments, NotFound, Pipelines, ServerSpecs
from runtime.scheduler.xds import XdsServer
from runtime.specs import SpecError
from runtime.specs.manifest import parse_spec

log = logging.getLogger(__name__)
KIND_NAMES = {pb.MODEL: "Model", pb.SERVER: "Server", pb.PIPELINE: "Pipeline",
              pb.EXPERIMENT: "Experiment"}
KEYS = {pb.MODEL: "model", pb.SERVER: "server", pb.PIPELINE: "pipeline",
        pb.EXPERIMENT: "experiment"}
BAD_KIND = "kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT"
GONE = {pb.MODEL: st.TERMINATED, pb.PIPELINE: "PipelineTerminated"}
ROUTED = (pb.MODEL, pb.PIPELINE, pb.EXPERIMENT)

__all__ = ["KEYS", "NotFound", "Scheduler"]


class Scheduler:
    def __init__(self, store: Store, xds: XdsServer, pipeline_gateway: Endpoint | None = None,
                 replica_lost_after_s: float = 10.0, autoscale: AutoscaleConfig | None = None,
                 feedback: Endpoint | None = None):
        self.store, self.xds, self.pipeline_gateway = store, xds, pipeline_gateway
        self.feedback = feedback  # where Envoy sends /feedback (None: not served)
        self.adaptive = Adaptive(self)
        self.watchers: set[tuple[int, str, asyncio.Queue]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._updated: dict[tuple[str, str], int] = {}
        self.models = ModelManager(self, replica_lost_after_s)
        self.servers = ServerSpecs(self)
        self.experiments = Experiments(self)
        self.pipelines = Pipelines(self)
        # kept between changes, updated for the models changed() names
        self.routing = snapshot.Routing(self)
        self.used_memory = UsedMemory(self.models.models)
        self._fingerprints: dict[str, tuple] = {}  # each model as last persisted
        for name, doc in store.all("model").items():
            m = self.models.models[name] = st.Model.from_doc(name, doc)
            self._fingerprints[name] = m.fingerprint()
        for key, doc in store.all("replica").items():
            self.models.replicas[key] = st.Replica(**doc)
            self.models.watch_lost(key)  # known from before a restart: must come back
        self.autoscaler = Autoscaler(self, autoscale or AutoscaleConfig())  # start(): in a loop
        self.xds.set_snapshot(self.routing.snapshot())  # Envoy gets the same routes after a restart

    # ---- plumbing used by the managers ---------------------------------------------------
    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def persist_replica(self, r: st.Replica) -> None:
        self.store.put("replica", r.key, r.to_doc())

    def updated(self, kind: str, name: str) -> int:
        return self._updated.get((kind, name), 0)

    def changed(self, kind: str, name: str) -> None:
        """Every change to a resource comes through here (models: also a change to one of
        their versions or replicas), so the routing snapshot looks again at just it."""
        if kind == "model":
            self._model_changed(name)
        self._updated[(kind, name)] = int(time.time() * 1000)
        self._notify(kind, name)
        if kind == "model":  # experiments and pipelines follow their models' readiness
            for exp in self.experiments.docs:
                self._notify("experiment", exp)
            for p in self.pipelines.docs:
                self._notify("pipeline", p)

    def _model_changed(self, name: str) -> None:
        """Persist the model and have routes and used memory look at it again, unless it is
        as it was last time (then nothing is written or recomputed)."""
        m = self.models.models.get(name)
        fingerprint = m.fingerprint() if m else None
        if fingerprint is not None and fingerprint == self._fingerprints.get(name):
            return
        self.routing.touch(name)
        self.used_memory.touch(name)
        if m is not None:
            self.store.put("model", name, m.to_doc())
            self._fingerprints[name] = fingerprint

    def forget(self, kind: str, name: str) -> None:
        if kind == "model":
            self._fingerprints.pop(name, None)
            self.routing.touch(name)
            self.used_memory.touch(name)
        self.store.delete(kind, name)

    def _notify(self, kind: str, name: str) -> None:
        for wkind, wname, q in list(self.watchers):
            if KEYS.get(wkind) == kind and wname in ("", name):
                q.put_nowait((kind, name))

    async def publish_routes(self) -> bool:
        return await self.xds.wait_applied(self.xds.set_snapshot(self.routing.snapshot()))

    # ---- API -----------------------------------------------------------------------------
    def _table(self, kind: int):
        tables = {pb.MODEL: self.models, pb.SERVER: self.servers,
                  pb.EXPERIMENT: self.experiments, pb.PIPELINE: self.pipelines}
        if kind not in tables:
            raise SpecError(BAD_KIND)
        return tables[kind]

    def apply(self, kind: int, name: str, spec_json: str) -> pb.ResourceStatus:
        table = self._table(kind)
        spec = parse_spec(KIND_NAMES.get(kind, ""), name, spec_json)
        self._check_name_free(kind, name)
        table.apply(name, spec)
        self.spawn(self.publish_routes())
        return self.status(kind, name)[0]

    def _check_name_free(self, kind: int, name: str) -> None:
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
                raise SpecError(f"metadata.name: {name!r} is already a {KIND_NAMES[other]}; "
                                "Models, Pipelines and Experiments need distinct names (they "
                                "share the seldon-model route)")

    def delete(self, kind: int, name: str) -> pb.ResourceStatus:
        self._table(kind).delete(name)
        self.spawn(self.publish_routes())
        items = self.status(kind, name, missing_ok=True)
        if items:
            return items[0]
        self._notify(KEYS[kind], name)
        return pb.ResourceStatus(kind=kind, name=name, state=GONE.get(kind, "Terminated"))

    def report_pipeline(self, report: pb.PipelineReport) -> None:
        self.pipelines.report(report)

    def _model_status(self, name: str) -> pb.ResourceStatus:
        m = self.models.models[name]
        return model_status(m, self.updated("model", name), self.autoscaler.models.detail(m))

    def _server_status(self, name: str) -> pb.ResourceStatus:
        spec = self.servers.docs.get(name, {}).get("spec")
        return server_status(name, self.models, spec, self.updated("server", name),
                             self.autoscaler.servers.detail(name))

    def status(self, kind: int, name: str = "", missing_ok: bool = False) -> list:
        if kind == pb.MODEL:
            names, build = self.models.models, self._model_status
        elif kind == pb.SERVER:  # servers known by spec or by a connected agent
            names = set(self.servers.docs) | {r.server for r in self.models.replicas.values()}
            build = self._server_status
        else:
            names, build = self._table(kind).docs, self._table(kind).status
        if not name:
            return [build(n) for n in sorted(names)]
        if name in names:
            return [build(name)]
        if missing_ok:
            return []
        raise NotFound(f"{KEYS[kind]} {name!r} not found")
