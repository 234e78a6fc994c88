"""Seldon Core 2's status documents, from the scheduler's ResourceStatus: what `core2 model|
pipeline|experiment|server status` print, so scripts written against `seldon ... status`
(jq on `modelName`, `versions[].state.state`, `pipelineName`, `modelsReady`, ...) keep working.

The field names are Seldon's (its scheduler API in protobuf JSON, as its CLI prints them).
As there, an empty string is left out (`reason` only when there is one); numbers (memory in
bytes too) are JSON numbers and, with booleans, always present, zero included. Timestamps are
RFC 3339 in UTC; core2 keeps one change time per resource, so every `lastChangeTimestamp` of
a resource is that time. `kubernetesMeta` is empty: the scheduler does not know the CR."""

import json
from datetime import UTC, datetime
from typing import Any

from runtime.pb import scheduler_pb2 as pb
from runtime.specs import ModelSpec
from runtime.specs.pipeline import PipelineSpec


def render(s: pb.ResourceStatus) -> dict:
    """The Seldon document for one resource of any kind."""
    return {pb.MODEL: model, pb.PIPELINE: pipeline, pb.EXPERIMENT: experiment,
            pb.SERVER: server}[s.kind](s)


def timestamp(unix_ms: int) -> str:
    """RFC 3339 with the fraction trimmed, as Go's RFC3339Nano writes it."""
    t = datetime.fromtimestamp(unix_ms / 1000, UTC)
    fraction = f"{unix_ms % 1000:03d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _some(**fields: Any) -> dict:
    return {k: v for k, v in fields.items() if v not in ("", None)}


# ---- models ------------------------------------------------------------------------------
def model_defn(name: str, spec: dict) -> dict:
    """Seldon's Model message (meta, modelSpec, deploymentSpec) for a Model spec."""
    m = ModelSpec.model_validate(spec)
    model_spec = _some(uri=m.storageUri, artifactVersion=m.artifactVersion,
                       requirements=m.requirements or None,
                       memory=m.memory_bytes if m.memory is not None else None,
                       server=m.server,
                       parameters=[p.model_dump() for p in m.parameters] or None,
                       explainer=m.explainer)
    deployment = _some(replicas=m.desired_replicas, minReplicas=m.minReplicas,
                       maxReplicas=m.maxReplicas)
    return {"meta": {"name": name, "kubernetesMeta": {}}, "modelSpec": model_spec,
            "deploymentSpec": deployment}


def _replica(r: pb.ReplicaStatus, when: str) -> dict:
    if r.state == "Evicted":  # core2's over-commit: still served, reloaded on demand
        return {"state": "Available", "reason": "evicted from memory; reloaded on the next "
                "request", "lastChangeTimestamp": when}
    return _some(state=r.state, reason=r.reason, lastChangeTimestamp=when)


def model(s: pb.ResourceStatus) -> dict:
    when = timestamp(s.updated_unix_ms)
    detail = json.loads(s.detail_json) if s.detail_json else {}
    specs, scaling = detail.get("specs", {}), detail.get("autoscaling")
    latest = json.loads(s.spec_json) if s.spec_json else None
    if latest is not None and scaling:  # the autoscaler's count, as Seldon's scheduler shows
        latest = {**latest, "replicas": scaling["replicas"]}
    versions = []
    for v in s.versions:
        spec = specs.get(str(v.version)) or (latest if v.version == s.version else None)
        placed = [r for r in v.replicas if r.state not in ("UnloadRequested", "Unloading",
                                                            "Unloaded")]
        entry = {
            "version": v.version, "serverName": v.server, "kubernetesMeta": {},
            "modelReplicaState": {str(r.replica): _replica(r, when) for r in v.replicas},
            "state": _some(state=v.state, availableReplicas=v.available_replicas,
                           unavailableReplicas=max(0, len(placed) - v.available_replicas),
                           reason=v.reason, lastChangeTimestamp=when)}
        if spec is not None:
            entry["modelDefn"] = model_defn(s.name, spec)
        versions.append(_some(**entry))
    # core2: the model autoscaler's view (replicas, bounds, load, last reason)
    return _some(modelName=s.name, versions=versions, autoscaling=scaling)


# ---- pipelines ---------------------------------------------------------------------------
def pipeline(s: pb.ResourceStatus) -> dict:
    spec = json.loads(s.spec_json) if s.spec_json else {}
    if spec:  # as written: without the defaults filled in (empty inputs, join types, ...)
        spec = PipelineSpec.model_validate(spec).model_dump(exclude_defaults=True)
    detail = json.loads(s.detail_json) if s.detail_json else {}
    models_ready = detail.get("modelsReady", s.ready)
    definition = {"name": s.name, "version": s.version, **spec, "kubernetesMeta": {}}
    state = _some(pipelineVersion=s.version, status=s.state, reason=s.reason,
                  lastChangeTimestamp=timestamp(s.updated_unix_ms))
    state["modelsReady"] = bool(models_ready)
    return {"pipelineName": s.name, "versions": [{"pipeline": definition, "state": state}]}


# ---- experiments -------------------------------------------------------------------------
def experiment(s: pb.ResourceStatus) -> dict:
    detail = json.loads(s.detail_json) if s.detail_json else {}
    return {"experimentName": s.name, "active": s.ready,
            "candidatesReady": bool(detail.get("candidatesReady", s.ready)),
            "mirrorReady": bool(detail.get("mirrorReady", s.ready)),
            "statusDescription": "experiment active" if s.ready else s.reason,
            "kubernetesMeta": {},
            # adaptive experiments (spec.strategy): what was learned, per candidate
            **({"candidates": [{"name": n, **c} for n, c in detail["candidates"].items()]}
               if detail.get("candidates") else {})}


# ---- servers -----------------------------------------------------------------------------
def server(s: pb.ResourceStatus) -> dict:
    """Seldon's ServerStatusResponse: replicas being drained are not counted, as there."""
    spec = json.loads(s.spec_json) if s.spec_json else {}
    detail = json.loads(s.detail_json) if s.detail_json else {}
    replicas, scaling = detail.get("replicas", []), detail.get("autoscaling")
    serving = [r for r in replicas if r["connected"] and not r["draining"]]
    resources = [{"replicaIdx": r["replica"], "totalMemoryBytes": r["memory"],
                  "availableMemoryBytes": r["availableMemory"],
                  "numLoadedModels": len(r["models"]),
                  "overCommitPercentage": r["overCommitPercentage"]} for r in serving]
    return {"serverName": s.name, "resources": resources,
            "expectedReplicas": scaling["replicas"] if scaling else
            spec.get("replicas", len(replicas)),
            "availableReplicas": len(serving),
            "numLoadedModelReplicas": sum(r["numLoadedModels"] for r in resources),
            "kubernetesMeta": {}}
