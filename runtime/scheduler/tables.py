"""Experiments, pipelines and server specs: resources the scheduler keeps as documents."""

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler.events import (
    Dependents,
    Event,
    ExperimentChanged,
    Hub,
    ModelChanged,
    PipelineChanged,
    ServerChanged,
    Stamps,
)
from runtime.scheduler.routes import Route, Target
from runtime.specs import ExperimentSpec, SpecError
from runtime.specs.pipeline import PipelineSpec
from runtime.specs.server import ServerSpec

if TYPE_CHECKING:
    from runtime.scheduler.adaptive import Adaptive
    from runtime.scheduler.models import ModelManager


class NotFound(Exception):
    pass


class Table:
    """Named JSON documents of one kind, persisted on every change, each change (and
    removal) published as an `event`."""

    key = ""
    event: type[Event] = Event

    def __init__(self, hub: Hub):
        self.hub = hub
        self.docs: dict[str, dict] = hub.store.all(self.key)
        self.updated = Stamps(hub.bus, self.event)

    def __contains__(self, name: str) -> bool:
        return name in self.docs

    def put(self, name: str, doc: dict) -> None:
        self.docs[name] = doc
        self.hub.store.put(self.key, name, doc)
        self.hub.bus.publish(self.event(name))

    def delete(self, name: str) -> None:
        if self.docs.pop(name, None) is None:
            raise NotFound(f"{self.key} {name!r} not found")
        self.hub.store.delete(self.key, name)
        self.hub.bus.publish(self.event(name))

    def _next_version(self, name: str, spec: dict) -> int:
        prev = self.docs.get(name)
        if prev is None:
            return 1
        return prev["version"] if prev["spec"] == spec else prev["version"] + 1


class ServerSpecs(Table):
    key, event = "server", ServerChanged

    def apply(self, name: str, spec: ServerSpec) -> None:
        self.put(name, {"spec": spec.model_dump(exclude_none=True)})


class Experiments(Table):
    """Each experiment follows its candidates and mirror (models, or pipelines): a change to
    one is a change to the experiment's readiness."""

    key, event = "experiment", ExperimentChanged

    def __init__(self, hub: Hub, models: "ModelManager", pipelines: "Pipelines",
                 adaptive: "Adaptive"):
        super().__init__(hub)
        self.models, self.pipelines, self.adaptive = models, pipelines, adaptive
        self._follow = {"model": Dependents(hub.bus, ModelChanged, ExperimentChanged),
                        "pipeline": Dependents(hub.bus, PipelineChanged, ExperimentChanged)}
        for name, doc in self.docs.items():
            self._follow_members(name, ExperimentSpec.model_validate(doc["spec"]))

    def _follow_members(self, name: str, spec: ExperimentSpec) -> None:
        for kind, follow in self._follow.items():
            follow.follow(name, _members(spec) if kind == spec.resourceType else [])

    def apply(self, name: str, spec: ExperimentSpec) -> None:
        if spec.default:
            for other, doc in self.docs.items():
                if other != name and doc["spec"].get("default") == spec.default:
                    raise SpecError(f"default: model {spec.default!r} is already the default "
                                    f"of experiment {other!r}")
        data = spec.model_dump(exclude_none=True)
        self._follow_members(name, spec)
        self.put(name, {"spec": data, "version": self._next_version(name, data)})

    def delete(self, name: str) -> None:
        super().delete(name)
        for follow in self._follow.values():
            follow.drop(name)
        self.adaptive.forget(name)

    def _ready(self, spec: ExperimentSpec, member: str) -> bool:
        if spec.resourceType == "pipeline":
            return member in self.pipelines and \
                self.pipelines.state(member)[0] == "PipelineReady"
        return self.models.is_live(member)

    def status(self, name: str) -> pb.ResourceStatus:
        doc = self.docs[name]
        spec = ExperimentSpec.model_validate(doc["spec"])
        waiting = [n for n in _members(spec) if not self._ready(spec, n)]
        detail: dict[str, object] = {
            "candidatesReady": all(self._ready(spec, c.name) for c in spec.candidates),
            "mirrorReady": spec.mirror is None or self._ready(spec, spec.mirror.name)}
        if spec.strategy is not None:  # adaptive: what was learned, per candidate
            self.adaptive.learner(name, spec)
            detail["candidates"] = self.adaptive.describe(name)
        reason = f"waiting for {spec.resourceType}(s) {', '.join(waiting)} to be ready" \
            if waiting else ""
        return pb.ResourceStatus(
            kind=pb.EXPERIMENT, name=name, version=doc["version"],
            state="ExperimentWaiting" if waiting else "ExperimentReady", ready=not waiting,
            reason=reason, spec_json=json.dumps(doc["spec"]), detail_json=json.dumps(detail),
            updated_unix_ms=self.updated.get(name))

    def routes(self, targets: Mapping[str, tuple[Target, ...]]) -> tuple[list[Route], set[str]]:
        """Routes for `<exp>.experiment`, and for each default model, which then no longer
        gets a route of its own (its name is returned in the second value)."""
        routes: list[Route] = []
        defaults: set[str] = set()
        for name, doc in sorted(self.docs.items()):
            spec = ExperimentSpec.model_validate(doc["spec"])
            suffix = ".pipeline" if spec.resourceType == "pipeline" else ""
            split = []
            learned = self.adaptive.weights(name, spec)  # None: fixed weights
            for c in spec.candidates:
                # A candidate mid-rollout has two versions: split its weight between them.
                members = targets.get(c.name + suffix, ())
                total = sum(t.weight for t in members)
                weight = c.weight if learned is None else learned[c.name]
                split += [replace(t, weight=max(1, weight * 100 * t.weight // total))
                          for t in members]
            if not split:
                continue
            mirror = targets.get(spec.mirror.name + suffix, (None,))[0] if spec.mirror else None
            percent = spec.mirror.percent if spec.mirror and mirror else 0
            logged = name if learned is not None else ""  # Envoy logs who served what
            routes.append(Route(f"{name}.experiment", tuple(split), (), mirror, percent, True,
                                experiment=logged))
            if spec.default:
                defaults.add(spec.default + suffix)
                prefix = f"/v2/{'pipelines' if suffix else 'models'}/{spec.default}"
                routes.append(Route(spec.default + suffix, tuple(split), (prefix,), mirror,
                                    percent, True, experiment=logged))
        return routes, defaults


def _members(spec: ExperimentSpec) -> list[str]:
    """The candidates and the mirror: what an experiment's readiness depends on."""
    return [c.name for c in spec.candidates] + ([spec.mirror.name] if spec.mirror else [])


# Every dataflow service must run a pipeline for it to be Ready (reports, by component name).
DATAFLOW = {"engine": "the dataflow engine", "gateway": "the pipeline gateway"}


class Pipelines(Table):
    """Readiness comes from the dataflow services' reports, which count only while the
    service that made them is connected: a report outlives neither its service's crash nor a
    scheduler restart (the services report again when they reconnect)."""

    key, event = "pipeline", PipelineChanged

    retired_key = "pipeline-retired"

    def __init__(self, hub: Hub, models: "ModelManager"):
        super().__init__(hub)
        self.models = models
        self.links: dict[str, int] = {}   # component -> open watch streams
        # each pipeline follows its step models: their readiness is its readiness
        self._steps = Dependents(hub.bus, ModelChanged, PipelineChanged)
        for name, doc in self.docs.items():
            doc["reports"] = {}
            self._steps.follow(name, (s["name"] for s in doc["spec"]["steps"]))
        # The last version of each unloaded pipeline: loaded again, it goes on from there, so
        # a (name, version) names one spec for good. The dataflow services key what they run
        # and what they reported by it; a reused version 1 looked already reported to them,
        # and the pipeline stayed PipelineCreating while it served.
        self.retired = {n: d["version"] for n, d in hub.store.all(self.retired_key).items()}

    def delete(self, name: str) -> None:
        version = self.docs.get(name, {}).get("version")
        super().delete(name)
        self._steps.drop(name)
        if version:
            self.retired[name] = version
            self.hub.store.put(self.retired_key, name, {"version": version})

    def _next_version(self, name: str, spec: dict) -> int:
        if name not in self.docs:
            return self.retired.get(name, 0) + 1
        return super()._next_version(name, spec)

    def link(self, component: str, delta: int) -> None:
        self.links[component] = self.links.get(component, 0) + delta
        if self.links[component] > 0:
            return
        del self.links[component]
        for name, doc in self.docs.items():
            if doc["reports"].pop(component, None) is not None:
                self.put(name, doc)

    def apply(self, name: str, spec: PipelineSpec) -> None:
        # Models may come later (as Seldon allows): the pipeline waits for them, see state().
        spec.validate_for(name)
        data = spec.model_dump(exclude_none=True)
        version = self._next_version(name, data)
        prev = self.docs.get(name)
        reports = prev["reports"] if prev and prev["version"] == version else {}
        self._steps.follow(name, (s.name for s in spec.steps))
        self.put(name, {"spec": data, "version": version, "reports": reports})

    def report(self, r: pb.PipelineReport) -> None:
        doc = self.docs.get(r.name)
        if doc is None or r.version != doc["version"]:
            return
        doc["reports"][r.component] = {"ready": r.ready, "reason": r.reason}
        self.put(r.name, doc)

    def models_missing(self, name: str) -> list[str]:
        """Step models the scheduler does not have (never loaded, or unloaded)."""
        models = self.models.models
        return [s["name"] for s in self.docs[name]["spec"]["steps"]
                if s["name"] not in models or models[s["name"]].deleted]

    def models_waiting(self, name: str) -> list[str]:
        """Step models not Available yet, each marked when it is not loaded at all."""
        missing = self.models_missing(name)
        return [f"{s['name']} (not loaded)" if s["name"] in missing else s["name"]
                for s in self.docs[name]["spec"]["steps"]
                if not self.models.is_live(s["name"])]

    def state(self, name: str) -> tuple[str, str]:
        """Ready only when every step's model is Available and the engine runs this version."""
        doc = self.docs[name]
        failed = [f"{c}: {r['reason']}" for c, r in doc["reports"].items()
                  if not r["ready"] and r["reason"]]
        if failed:
            return "PipelineFailed", "; ".join(failed)
        if waiting := self.models_waiting(name):
            return "PipelineCreating", f"waiting for model(s) {', '.join(waiting)}"
        waiting = [what for c, what in DATAFLOW.items()
                   if not (c in self.links and doc["reports"].get(c, {}).get("ready"))]
        if waiting:
            return "PipelineCreating", f"waiting for {', '.join(waiting)}"
        return "PipelineReady", ""

    def status(self, name: str) -> pb.ResourceStatus:
        doc = self.docs[name]
        state, reason = self.state(name)
        return pb.ResourceStatus(
            kind=pb.PIPELINE, name=name, version=doc["version"], state=state, reason=reason,
            ready=state == "PipelineReady", spec_json=json.dumps(doc["spec"]),
            detail_json=json.dumps({"reports": doc["reports"],
                                    "modelsReady": not self.models_waiting(name),
                                    "modelsMissing": self.models_missing(name)}),
            updated_unix_ms=self.updated.get(name))
