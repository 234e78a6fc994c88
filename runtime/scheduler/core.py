"""The scheduler hub: owns every resource, persists it, tells Envoy and watchers about changes."""

import asyncio
import json
import logging
import time

from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler import state as st
from runtime.scheduler.models import ModelManager
from runtime.scheduler.routes import Backend, Endpoint, Route, Snapshot, Target
from runtime.scheduler.store import Store
from runtime.scheduler.xds import XdsServer
from runtime.specs import ExperimentSpec, SpecError
from runtime.specs.manifest import parse_spec
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger(__name__)
KIND_NAMES = {pb.MODEL: "Model", pb.SERVER: "Server", pb.PIPELINE: "Pipeline",
              pb.EXPERIMENT: "Experiment"}
KEYS = {pb.MODEL: "model", pb.SERVER: "server", pb.PIPELINE: "pipeline",
        pb.EXPERIMENT: "experiment"}
BY_KEY = {v: k for k, v in KEYS.items()}


class NotFound(Exception):
    pass


class Scheduler:
    def __init__(self, store: Store, xds: XdsServer, pipeline_gateway: Endpoint | None = None):
        self.store, self.xds, self.pipeline_gateway = store, xds, pipeline_gateway
        self.models = ModelManager(self)
        self.servers: dict[str, dict] = store.all("server_spec")
        self.experiments: dict[str, dict] = store.all("experiment")
        self.pipelines: dict[str, dict] = store.all("pipeline")
        self.watchers: set[tuple[int, str, asyncio.Queue]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._updated: dict[tuple[str, str], int] = {}
        for name, doc in store.all("model").items():
            self.models.models[name] = st.Model.from_doc(name, doc)
        for key, doc in store.all("replica").items():
            self.models.replicas[key] = st.Replica(**doc)
        self.xds.set_snapshot(self.snapshot())  # Envoy gets the same routes after a restart

    # ---- plumbing used by the managers ---------------------------------------------------
    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def persist_replica(self, r: st.Replica) -> None:
        self.store.put("replica", r.key, r.to_doc())

    def changed(self, kind: str, name: str) -> None:
        if kind == "model" and name in self.models.models:
            self.store.put("model", name, self.models.models[name].to_doc())
        self._updated[(kind, name)] = int(time.time() * 1000)
        self._notify(kind, name)
        if kind == "model":  # experiments and pipelines follow their models' readiness
            for exp in self.experiments:
                self._notify("experiment", exp)
            for p in self.pipelines:
                self._notify("pipeline", p)

    def forget(self, kind: str, name: str) -> None:
        self.store.delete(kind, name)

    def _notify(self, kind: str, name: str) -> None:
        for wkind, wname, q in list(self.watchers):
            if KEYS.get(wkind) == kind and wname in ("", name):
                q.put_nowait((kind, name))

    async def publish_routes(self) -> bool:
        return await self.xds.wait_applied(self.xds.set_snapshot(self.snapshot()))

    # ---- API -----------------------------------------------------------------------------
    def apply(self, kind: int, name: str, spec_json: str) -> pb.ResourceStatus:
        if kind not in KIND_NAMES:
            raise SpecError("kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT")
        spec = parse_spec(KIND_NAMES[kind], name, spec_json)
        if kind == pb.MODEL:
            self.models.apply(name, spec)
        elif kind == pb.SERVER:
            self.servers[name] = {"spec": spec.model_dump(exclude_none=True)}
            self.store.put("server_spec", name, self.servers[name])
            self.changed("server", name)
        elif kind == pb.EXPERIMENT:
            self._apply_experiment(name, spec)
        elif kind == pb.PIPELINE:
            self._apply_pipeline(name, spec)
        self.spawn(self.publish_routes())
        return self.status(kind, name)[0]

    def delete(self, kind: int, name: str) -> pb.ResourceStatus:
        key = KEYS.get(kind)
        if kind == pb.MODEL:
            if self.models.delete(name) is None:
                raise NotFound(f"model {name!r} not found")
        elif kind == pb.SERVER:
            if self.servers.pop(name, None) is None:
                raise NotFound(f"server {name!r} not found")
            self.store.delete("server_spec", name)
        elif kind == pb.EXPERIMENT:
            if self.experiments.pop(name, None) is None:
                raise NotFound(f"experiment {name!r} not found")
            self.store.delete("experiment", name)
        elif kind == pb.PIPELINE:
            if self.pipelines.pop(name, None) is None:
                raise NotFound(f"pipeline {name!r} not found")
            self.store.delete("pipeline", name)
        else:
            raise SpecError("kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT")
        self.spawn(self.publish_routes())
        items = self.status(kind, name, missing_ok=True)
        if items:
            return items[0]
        self._notify(key, name)
        terminated = "PipelineTerminated" if kind == pb.PIPELINE else "Terminated"
        if kind == pb.MODEL:
            terminated = st.TERMINATED
        return pb.ResourceStatus(kind=kind, name=name, state=terminated)

    def status(self, kind: int, name: str = "", missing_ok: bool = False) -> list:
        builders = {pb.MODEL: (self.models.models, self._model_status),
                    pb.SERVER: (self._server_names(), self._server_status),
                    pb.EXPERIMENT: (self.experiments, self._experiment_status),
                    pb.PIPELINE: (self.pipelines, self._pipeline_status)}
        if kind not in builders:
            raise SpecError("kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT")
        table, build = builders[kind]
        if name:
            if name not in table:
                if missing_ok:
                    return []
                raise NotFound(f"{KEYS[kind]} {name!r} not found")
            return [build(name)]
        return [build(n) for n in sorted(table)]

    # ---- models --------------------------------------------------------------------------
    def _model_status(self, name: str) -> pb.ResourceStatus:
        m = self.models.models[name]
        v = m.latest
        live = m.live_version()
        versions = [pb.VersionStatus(
            version=x.version, state=x.state, reason=x.reason, server=x.server,
            available_replicas=len(x.available_replicas()),
            replicas=[pb.ReplicaStatus(server=x.server, replica=i,
                                       state="Evicted" if r.evicted else r.state,
                                       reason=r.reason)
                      for i, r in sorted(x.replicas.items())])
            for x in reversed(m.versions)]
        reason = v.reason
        if live is not None and live is not v and v.state in (st.FAILED, st.SCHEDULE_FAILED):
            reason = f"version {v.version}: {v.reason} (version {live.version} still serving)"
        return pb.ResourceStatus(
            kind=pb.MODEL, name=name, version=v.version, state=v.state, reason=reason,
            ready=v.state == st.AVAILABLE, spec_json=v.spec.model_dump_json(exclude_none=True),
            versions=versions, updated_unix_ms=self._updated.get(("model", name), 0))

    # ---- servers -------------------------------------------------------------------------
    def _server_names(self) -> set[str]:
        return set(self.servers) | {r.server for r in self.models.replicas.values()}

    def _server_status(self, name: str) -> pb.ResourceStatus:
        reps = sorted((r for r in self.models.replicas.values() if r.server == name),
                      key=lambda r: r.idx)
        placed: dict[int, list[str]] = {r.idx: [] for r in reps}
        for m in self.models.models.values():
            for v in m.versions:
                if v.server == name:
                    for i in v.replicas:
                        placed.setdefault(i, []).append(v.internal_name)
        detail = {"replicas": [{
            "replica": r.idx, "connected": r.connected, "capabilities": r.capabilities,
            "memory": r.memory, "overCommitPercentage": r.over_commit,
            "availableMemory": r.available_memory, "models": sorted(placed.get(r.idx, []))}
            for r in reps]}
        spec = self.servers.get(name, {}).get("spec")
        connected = sum(r.connected for r in reps)
        return pb.ResourceStatus(
            kind=pb.SERVER, name=name, state="Ready" if reps and connected == len(reps)
            else "NotReady", ready=bool(reps) and connected == len(reps),
            reason=f"{connected}/{len(reps)} replicas connected",
            spec_json=json.dumps(spec) if spec else "", detail_json=json.dumps(detail),
            updated_unix_ms=self._updated.get(("server", name), 0))

    # ---- experiments ---------------------------------------------------------------------
    def _apply_experiment(self, name: str, spec: ExperimentSpec) -> None:
        if spec.default:
            for other, doc in self.experiments.items():
                if other != name and doc["spec"].get("default") == spec.default:
                    raise SpecError(f"default: model {spec.default!r} is already the default "
                                    f"of experiment {other!r}")
        prev = self.experiments.get(name)
        version = prev["version"] + 1 if prev else 1
        self.experiments[name] = {"spec": spec.model_dump(exclude_none=True), "version": version}
        self.store.put("experiment", name, self.experiments[name])
        self.changed("experiment", name)

    def _experiment_members(self, spec: ExperimentSpec) -> list[str]:
        return [c.name for c in spec.candidates] + ([spec.mirror.name] if spec.mirror else [])

    def _member_ready(self, spec: ExperimentSpec, name: str) -> bool:
        if spec.resourceType == "pipeline":
            return name in self.pipelines and self._pipeline_state(name)[0] == "PipelineReady"
        m = self.models.models.get(name)
        return m is not None and not m.deleted and m.live_version() is not None

    def _experiment_status(self, name: str) -> pb.ResourceStatus:
        doc = self.experiments[name]
        spec = ExperimentSpec.model_validate(doc["spec"])
        waiting = [n for n in self._experiment_members(spec) if not self._member_ready(spec, n)]
        kind = spec.resourceType
        detail = {"candidatesReady": all(self._member_ready(spec, c.name)
                                         for c in spec.candidates),
                  "mirrorReady": spec.mirror is None or self._member_ready(spec, spec.mirror.name)}
        return pb.ResourceStatus(
            kind=pb.EXPERIMENT, name=name, version=doc["version"],
            state="ExperimentReady" if not waiting else "ExperimentWaiting", ready=not waiting,
            reason=f"waiting for {kind}(s) {', '.join(waiting)} to be ready" if waiting else "",
            spec_json=json.dumps(doc["spec"]), detail_json=json.dumps(detail),
            updated_unix_ms=self._updated.get(("experiment", name), 0))

    # ---- pipelines -----------------------------------------------------------------------
    def _apply_pipeline(self, name: str, spec: PipelineSpec) -> None:
        steps = {s.name for s in spec.steps}
        if name in steps:
            raise SpecError(f"steps: a step is named like the pipeline ({name!r})")
        unknown = sorted(s for s in steps if s not in self.models.models)
        if unknown:
            raise SpecError(f"steps: no model named {', '.join(unknown)} (load it first)")
        prev = self.pipelines.get(name)
        same = prev and prev["spec"] == spec.model_dump(exclude_none=True)
        version = prev["version"] if same else (prev["version"] + 1 if prev else 1)
        self.pipelines[name] = {"spec": spec.model_dump(exclude_none=True), "version": version,
                                "reports": prev["reports"] if same else {}}
        self.store.put("pipeline", name, self.pipelines[name])
        self.changed("pipeline", name)

    def report_pipeline(self, r: pb.PipelineReport) -> None:
        doc = self.pipelines.get(r.name)
        if doc is None or r.version != doc["version"]:
            return
        doc["reports"][r.component] = {"ready": r.ready, "reason": r.reason}
        self.store.put("pipeline", r.name, doc)
        self.changed("pipeline", r.name)

    def _pipeline_state(self, name: str) -> tuple[str, str]:
        doc = self.pipelines[name]
        waiting = [s["name"] for s in doc["spec"]["steps"]
                   if not (m := self.models.models.get(s["name"])) or m.live_version() is None]
        failed = [f"{c}: {r['reason']}" for c, r in doc["reports"].items() if not r["ready"]
                  and r["reason"]]
        if failed:
            return "PipelineFailed", "; ".join(failed)
        if waiting:
            return "PipelineCreating", f"waiting for model(s) {', '.join(waiting)}"
        if not doc["reports"].get("engine", {}).get("ready"):
            return "PipelineCreating", "waiting for the dataflow engine"
        return "PipelineReady", ""

    def _pipeline_status(self, name: str) -> pb.ResourceStatus:
        doc = self.pipelines[name]
        state, reason = self._pipeline_state(name)
        return pb.ResourceStatus(
            kind=pb.PIPELINE, name=name, version=doc["version"], state=state, reason=reason,
            ready=state == "PipelineReady", spec_json=json.dumps(doc["spec"]),
            detail_json=json.dumps({"reports": doc["reports"]}),
            updated_unix_ms=self._updated.get(("pipeline", name), 0))

    # ---- routes --------------------------------------------------------------------------
    def _model_backends(self, m: st.Model) -> list[tuple[Backend, int]]:
        """Backends a model's traffic goes to: the live version, plus a newer version that is
        coming up (traffic shared while it rolls out), weighted by serving replicas."""
        out = []
        live = m.live_version()
        for v in m.versions:
            if v.state in (st.TERMINATING, st.TERMINATED):
                continue
            if v is not live and not (v is m.latest and v.serving_replicas()):
                continue
            eps = []
            for idx in v.serving_replicas():
                r = self.models.replicas.get(f"{v.server}/{idx}")
                if r is None:
                    continue
                evicted = v.replicas[idx].evicted
                eps.append(Endpoint(r.host, r.agent_http_port if evicted else r.server_http_port,
                                    r.agent_grpc_port if evicted else r.server_grpc_port))
            if eps:
                out.append((Backend(v.internal_name, tuple(eps), v.internal_name), len(eps)))
        return out

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        model_targets: dict[str, tuple[Target, ...]] = {}
        for m in self.models.models.values():
            if m.deleted:
                continue
            backends = self._model_backends(m)
            for b, _ in backends:
                snap.backends[b.name] = b
            if backends:
                model_targets[m.name] = tuple(Target(b.name, w) for b, w in backends)
        if self.pipeline_gateway:
            for p in self.pipelines:
                b = Backend(f"pipeline_{p}", (self.pipeline_gateway,), f"{p}.pipeline")
                snap.backends[b.name] = b
                model_targets[f"{p}.pipeline"] = (Target(b.name),)
        exp_routes, defaults = self._experiment_routes(model_targets)
        for name, targets in model_targets.items():
            if name in defaults:
                continue
            if name.endswith(".pipeline"):
                prefix = f"/v2/pipelines/{name.removesuffix('.pipeline')}"
            else:
                prefix = f"/v2/models/{name}"
            snap.routes.append(Route(name, targets, (prefix,)))
        snap.routes.extend(exp_routes)
        return snap

    def _experiment_routes(self, model_targets):
        routes, defaults = [], set()
        for name, doc in sorted(self.experiments.items()):
            spec = ExperimentSpec.model_validate(doc["spec"])
            suffix = ".pipeline" if spec.resourceType == "pipeline" else ""
            targets = []
            for c in spec.candidates:
                # A candidate mid-rollout has two versions: split its weight between them.
                members = model_targets.get(c.name + suffix, ())
                total = sum(t.weight for t in members)
                for t in members:
                    targets.append(Target(t.backend, max(1, c.weight * 100 * t.weight // total)))
            mirror = None
            if spec.mirror and model_targets.get(spec.mirror.name + suffix):
                mirror = model_targets[spec.mirror.name + suffix][0]
            if not targets:
                continue
            route = Route(f"{name}.experiment", tuple(targets), (), mirror,
                          spec.mirror.percent if spec.mirror else 0, sticky=True)
            routes.append(route)
            if spec.default:
                default = spec.default + suffix
                defaults.add(default)
                prefix = (f"/v2/pipelines/{spec.default}" if suffix
                          else f"/v2/models/{spec.default}")
                routes.append(Route(default, route.targets, (prefix,), mirror,
                                    route.mirror_percent, sticky=True))
        return routes, defaults
