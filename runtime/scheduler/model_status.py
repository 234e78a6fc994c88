"""Status messages for models and servers, built from the ModelManager's state."""

import json

from runtime.pb import scheduler_pb2 as pb
from runtime.scheduler import state as st


def model_status(m: st.Model, updated: int, autoscaling: dict | None = None
                 ) -> pb.ResourceStatus:
    v, live = m.latest, m.live_version()
    versions = [pb.VersionStatus(
        version=x.version, state=x.state, reason=x.reason, server=x.server,
        available_replicas=len(x.available_replicas()),
        replicas=[pb.ReplicaStatus(server=x.server, replica=i,
                                   state="Evicted" if r.evicted else r.state, reason=r.reason)
                  for i, r in sorted(x.replicas.items())])
        for x in reversed(m.versions)]
    reason = v.reason
    if live is not None and live is not v and v.state in (st.FAILED, st.SCHEDULE_FAILED):
        reason = f"version {v.version}: {v.reason} (version {live.version} still serving)"
    # older versions still known keep their own spec (Seldon's status shows each modelDefn)
    specs = {str(x.version): x.spec.model_dump(exclude_none=True) for x in m.versions
             if x is not v}
    detail = {**({"specs": specs} if specs else {}),
              **({"autoscaling": autoscaling} if autoscaling else {})}
    return pb.ResourceStatus(
        kind=pb.MODEL, name=m.name, version=v.version, state=v.state, reason=reason,
        ready=v.state == st.AVAILABLE, spec_json=v.spec.model_dump_json(exclude_none=True),
        versions=versions, updated_unix_ms=updated,
        detail_json=json.dumps(detail) if detail else "")


def server_status(name: str, manager, spec: dict | None, updated: int,
                  autoscaling: dict | None = None) -> pb.ResourceStatus:
    reps = sorted((r for r in manager.replicas.values() if r.server == name),
                  key=lambda r: r.idx)
    placed: dict[int, list[str]] = {r.idx: [] for r in reps}
    for m in manager.models.values():
        for v in m.versions:
            if v.server == name:
                for i in v.replicas:
                    placed.setdefault(i, []).append(v.internal_name)
    detail: dict[str, object] = {"replicas": [{
        "replica": r.idx, "connected": r.connected, "draining": r.draining,
        "capabilities": r.capabilities,
        "memory": r.memory, "overCommitPercentage": r.over_commit,
        "availableMemory": r.available_memory, "models": sorted(placed.get(r.idx, []))}
        for r in reps]}
    if autoscaling:
        detail["autoscaling"] = autoscaling
    connected = sum(r.connected for r in reps)
    ready = bool(reps) and connected == len(reps)
    return pb.ResourceStatus(
        kind=pb.SERVER, name=name, state="Ready" if ready else "NotReady", ready=ready,
        reason=f"{connected}/{len(reps)} replicas connected",
        spec_json=json.dumps(spec) if spec else "", detail_json=json.dumps(detail),
        updated_unix_ms=updated)
