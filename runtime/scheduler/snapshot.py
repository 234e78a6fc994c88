"""What Envoy should route, derived from the scheduler's state (see routes.Snapshot)."""

from runtime.scheduler import state as st
from runtime.scheduler.routes import Backend, Endpoint, Route, Snapshot, Target

PIPELINE_GATEWAY = "pipelinegateway"


def model_backends(m: st.Model, replicas: dict[str, st.Replica]) -> list[tuple[Backend, Target]]:
    """Where a model's traffic goes: the live version, plus a newer version that is coming up
    (traffic shared while it rolls out), each weighted by its serving replicas. An evicted
    replica's endpoint is its agent, which reloads the model and forwards. The backend is
    named after its replicas, so every model on the same ones shares one Envoy cluster."""
    out = []
    live = m.live_version()
    for v in m.versions:
        if v.state in (st.TERMINATING, st.TERMINATED):
            continue
        if v is not live and not (v is m.latest and v.serving_replicas()):
            continue
        eps, parts = [], [v.server]
        for idx in v.serving_replicas():
            r = replicas.get(f"{v.server}/{idx}")
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


def build(hub) -> Snapshot:
    snap = Snapshot()
    targets: dict[str, tuple[Target, ...]] = {}
    for m in hub.models.models.values():
        if m.deleted:
            continue
        backends = model_backends(m, hub.models.replicas)
        for b, _ in backends:
            snap.backends[b.name] = b
        if backends:
            targets[m.name] = tuple(t for _, t in backends)
    if hub.pipeline_gateway and hub.pipelines.docs:
        snap.backends[PIPELINE_GATEWAY] = Backend(PIPELINE_GATEWAY, (hub.pipeline_gateway,),
                                                  model=False)
        for p in hub.pipelines.docs:
            # The gateway learns the pipeline from seldon-internal-model, like a model server.
            targets[f"{p}.pipeline"] = (Target(PIPELINE_GATEWAY, 1, f"{p}.pipeline"),)
    experiment_routes, defaults = hub.experiments.routes(targets)
    for name, ts in targets.items():
        if name not in defaults:
            pipeline = name.removesuffix(".pipeline")
            prefix = f"/v2/pipelines/{pipeline}" if pipeline != name else f"/v2/models/{name}"
            snap.routes.append(Route(name, ts, (prefix,)))
    snap.routes.extend(experiment_routes)
    return snap
