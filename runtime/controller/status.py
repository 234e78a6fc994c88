"""A custom resource's `status` as Seldon writes it, from the scheduler's ResourceStatus.

Conditions are Seldon's (ModelReady, PipelineReady, ExperimentReady, CandidatesReady,
MirrorReady, and Ready summing them up); the printer columns in crds.py read them. The result is
a pure function of its inputs plus the old status (for lastTransitionTime), so writing it again
changes nothing and the controller can skip the write.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from runtime.pb import scheduler_pb2 as pb

KIND_CONDITION = {"Model": "ModelReady", "Pipeline": "PipelineReady",
                  "Experiment": "ExperimentReady", "Server": "ServerReady"}
REFUSED = "SchedulerRefused"   # the condition reason when the scheduler refused the spec
PENDING = "NotApplied"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(ctype: str, ok: bool, reason: str, message: str, old: dict) -> dict:
    prev = old.get(ctype)
    status = "True" if ok else "False"
    when = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else _now()
    out = {"type": ctype, "status": status, "reason": reason or ("Ready" if ok else "NotReady"),
           "lastTransitionTime": when}
    if message:
        out["message"] = message
    return out


def render(kind: str, spec: dict, old_status: dict | None, scheduler: pb.ResourceStatus | None,
           refused: str | None, observed: int | None, extra: Sequence[tuple] = ()) -> dict:
    """The status to write. `refused`: the scheduler's reason for refusing the current spec;
    `observed`: the generation last accepted by the scheduler; `extra`: more conditions as
    (type, ok, reason, message)."""
    old = {c.get("type"): c for c in (old_status or {}).get("conditions", [])}
    conds: list[tuple] = []
    main = KIND_CONDITION[kind]
    if refused:
        conds.append((main, False, REFUSED, refused))
    elif scheduler is None:
        conds.append((main, False, PENDING, "waiting for the scheduler"))
    else:
        conds.append((main, scheduler.ready, scheduler.state, scheduler.reason))
    detail = json.loads(scheduler.detail_json) if scheduler and scheduler.detail_json else {}
    if kind == "Experiment" and scheduler is not None and not refused:
        conds.append(("CandidatesReady", detail.get("candidatesReady", False), "", ""))
        conds.append(("MirrorReady", detail.get("mirrorReady", True), "", ""))
    conds += list(extra)
    ready = all(c[1] for c in conds)
    summary = next((c for c in conds if not c[1]), conds[0])
    conds.append(("Ready", ready, summary[2], summary[3]))
    out: dict = {"conditions": [_condition(ctype, ok, reason, message, old)
                                  for ctype, ok, reason, message in conds]}
    if observed is not None:
        out["observedGeneration"] = observed
    if kind == "Model":
        latest = scheduler.versions[0] if scheduler and scheduler.versions else None
        out["replicas"] = detail.get("autoscaling", {}).get("replicas") or (  # autoscaled
            spec.get("replicas") if spec.get("replicas") is not None else 1)
        out["availableReplicas"] = latest.available_replicas if latest else 0
        if scheduler is not None:
            out["modelVersion"] = scheduler.version
    elif kind == "Server":
        replicas = detail.get("replicas", [])
        out["replicas"] = sum(1 for r in replicas if r.get("connected"))
        out["loadedModels"] = len({m for r in replicas for m in r.get("models", [])})
    return out


def same(new: dict, old: dict | None) -> bool:
    """Whether writing `new` would change nothing the controller owns."""
    old = old or {}
    return all(old.get(k) == v for k, v in new.items())
