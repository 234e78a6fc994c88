"""What the scheduler tells Envoy, without processes: models on the same replicas share one
cluster per protocol and each route names its own version; an evicted replica gets a cluster
of its own (its agent); a change re-encodes, and a push carries, only the scopes it touches.
End to end, the same routing is exercised through real Envoy by test_serving, test_versions,
test_experiments and test_overcommit."""

from types import SimpleNamespace

from runtime.scheduler import envoy_resources as er
from runtime.scheduler import snapshot
from runtime.scheduler import state as st
from runtime.scheduler.routes import Route, Target
from runtime.specs import ModelSpec

SPEC = ModelSpec(storageUri="/m", requirements=["sklearn"])


def _replica(idx: int) -> st.Replica:
    return st.Replica("mlserver", idx, ["sklearn"], 10**9, 0, "127.0.0.1", 9100 + idx,
                      9200 + idx, 9300 + idx, 9400 + idx, connected=True)


def _model(name: str, *versions: tuple[int, str, dict[int, bool]]) -> st.Model:
    """versions: (number, state, {replica idx: evicted})."""
    return st.Model(name, [st.ModelVersion(
        name, n, SPEC, state, server="mlserver",
        replicas={i: st.ReplicaState(st.R_AVAILABLE, evicted=ev) for i, ev in where.items()})
        for n, state, where in versions])


def _hub(*models: st.Model, replicas: int = 2):
    return SimpleNamespace(
        models=SimpleNamespace(models={m.name: m for m in models},
                               replicas={f"mlserver/{i}": _replica(i) for i in range(replicas)}),
        pipeline_gateway=None, pipelines=SimpleNamespace(docs={}),
        experiments=SimpleNamespace(routes=lambda targets: ([], set())))


def _weighted(snap, name: str) -> list[tuple[str, str]]:
    """(cluster, seldon-internal-model) of the REST route in the scope of `name`."""
    config = er.route_configurations(snap)[name]
    (route,) = [r for r in config.virtual_hosts[0].routes if not r.match.HasField("grpc")]
    return [(c.name, c.request_headers_to_add[0].header.value)
            for c in route.route.weighted_clusters.clusters]


def test_models_on_the_same_replicas_share_clusters_and_keep_their_versions():
    snap = snapshot.build(_hub(_model("iris", (1, st.AVAILABLE, {0: False, 1: False})),
                               _model("wine", (3, st.AVAILABLE, {0: False, 1: False}))))
    assert set(er.clusters(snap)) == {"mlserver_0_1_http", "mlserver_0_1_grpc"}
    assert _weighted(snap, "iris") == [("mlserver_0_1_http", "iris_1")]
    assert _weighted(snap, "wine") == [("mlserver_0_1_http", "wine_3")]


def test_a_rollout_on_the_same_replicas_splits_between_versions_not_clusters():
    snap = snapshot.build(_hub(_model("iris", (1, st.AVAILABLE, {0: False}),
                                      (2, st.PROGRESSING, {0: False}))))
    assert set(er.clusters(snap)) == {"mlserver_0_http", "mlserver_0_grpc"}
    assert _weighted(snap, "iris") == [
        ("mlserver_0_http", "iris_1"), ("mlserver_0_http", "iris_2")]


def test_an_evicted_replica_is_reached_through_its_agent_in_a_cluster_of_its_own():
    snap = snapshot.build(_hub(_model("iris", (1, st.AVAILABLE, {0: False})),
                               _model("wine", (1, st.AVAILABLE, {0: True}))))
    assert _weighted(snap, "wine") == [("mlserver_0a_http", "wine_1")]
    (ep,) = er.assignments(snap)["mlserver_0a_http"].endpoints[0].lb_endpoints
    assert ep.endpoint.address.socket_address.port_value == _replica(0).agent_http_port
    (ep,) = er.assignments(snap)["mlserver_0_http"].endpoints[0].lb_endpoints
    assert ep.endpoint.address.socket_address.port_value == _replica(0).server_http_port


def test_a_change_re_encodes_and_sends_only_the_scopes_it_touches(monkeypatch):
    models = [_model(f"m{i}", (1, st.AVAILABLE, {0: False})) for i in range(2000)]
    table = er.ScopeTable()
    _, first = table.encode(snapshot.build(_hub(*models)))
    built = []
    config = er._route_config
    monkeypatch.setattr(er, "_route_config", lambda *a: built.append(a[0].name) or config(*a))
    models.append(_model("new", (1, st.AVAILABLE, {1: False})))
    models[7] = _model("m7", (2, st.AVAILABLE, {0: False}))
    snap = snapshot.build(_hub(*models))
    scopes, second = table.encode(snap)
    assert sorted(built) == ["m7", "new"]
    assert (scopes, second) == er.ScopeTable().encode(snap)  # as if built from scratch
    changed = sorted(n for n, b in second.items() if first.get(n) != b)
    assert changed == ["route:m7", "route:new"]
    assert _weighted(snap, "m7") == [("mlserver_0_http", "m7_2")]


def test_a_push_carries_only_the_changed_route_configurations():
    import asyncio

    from runtime.scheduler.xds import XdsServer, _Stream

    async def push():
        xds, stream = XdsServer(), _Stream("envoy")
        _, routes = xds.scopes.encode(snapshot.build(_hub(
            *[_model(f"m{i}", (1, st.AVAILABLE, {0: False})) for i in range(50)])))
        stream.subscribed[er.ROUTE_TYPE] = set(routes)
        await xds._send_routes(stream, routes)
        first = await stream.outbox.get()
        _, routes = xds.scopes.encode(snapshot.build(_hub(
            *[_model(f"m{i}", (2 if i == 3 else 1, st.AVAILABLE, {0: False}))
              for i in range(50)])))
        await xds._send_routes(stream, routes)
        second = await stream.outbox.get()
        nothing = await xds._send_routes(stream, routes)
        return first, second, nothing

    first, second, nothing = asyncio.run(push())
    assert len(first.resources) == 50
    names = [er.route_pb2.RouteConfiguration.FromString(r.value).name for r in second.resources]
    assert names == ["route:m3"] and nothing is None


def test_sticky_label_names_the_version():
    route = Route("exp.experiment", (Target("mlserver_0", 50, "iris_1"),
                                     Target("mlserver_1", 50, "iris2_1")), sticky=True)
    assert [er.route_label(t) for t in route.targets] == [":iris_1:", ":iris2_1:"]
