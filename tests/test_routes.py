"""What the scheduler tells Envoy, without processes: models on the same replicas share one
cluster per protocol and each route names its own version; an evicted replica gets a cluster
of its own (its agent); a change re-encodes, and a push carries, only the scopes it touches.
End to end, the same routing is exercised through real Envoy by test_serving, test_versions,
test_experiments and test_overcommit."""

from types import SimpleNamespace

from envoy.service.discovery.v3 import discovery_pb2

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
        pipeline_gateway=None, feedback=None, pipelines=SimpleNamespace(docs={}),
        experiments=SimpleNamespace(routes=lambda targets: ([], set())))


def _weighted(snap, name: str) -> list[tuple[str, str]]:
    """(cluster, seldon-internal-model) of the REST route in the scope of `name`."""
    config = er.route_configurations(snap)[name]
    (route,) = [r for r in config.virtual_hosts[0].routes
                if not r.match.HasField("grpc") and r.HasField("route")]
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


def test_a_delta_push_carries_only_the_changed_resources():
    import asyncio

    from runtime.scheduler.xds import XdsServer, _Stream

    def models(n: int, bumped: int = -1) -> list[st.Model]:
        return [_model(f"m{i}", (2 if i == bumped else 1, st.AVAILABLE, {0: False}))
                for i in range(n)]

    async def push(xds, stream, snap) -> dict[str, discovery_pb2.DeltaDiscoveryResponse]:
        scopes, routes = xds._scoped(snap)
        stream.subscribed[er.ROUTE_TYPE] = set(routes)
        out = {}
        for type_url, resources in ((er.SCOPE_TYPE, scopes), (er.ROUTE_TYPE, routes)):
            if await xds._push(stream, type_url, resources):
                out[type_url] = stream.outbox.get_nowait()
        return out

    async def run():
        xds, stream = XdsServer(), _Stream("envoy")
        stream.subscribed[er.SCOPE_TYPE] = set()
        first = await push(xds, stream, snapshot.build(_hub(*models(50))))
        bumped = await push(xds, stream, snapshot.build(_hub(*models(50, bumped=3))))
        again = await push(xds, stream, snapshot.build(_hub(*models(50, bumped=3))))
        fewer = await push(xds, stream, snapshot.build(_hub(*models(49, bumped=3))))
        return first, bumped, again, fewer

    first, bumped, again, fewer = asyncio.run(run())
    assert len(first[er.SCOPE_TYPE].resources) == len(first[er.ROUTE_TYPE].resources) == 50
    assert list(bumped) == [er.ROUTE_TYPE]  # the scope is unchanged: only its routes go
    assert [r.name for r in bumped[er.ROUTE_TYPE].resources] == ["route:m3"]
    assert again == {}
    assert list(fewer[er.SCOPE_TYPE].removed_resources) == ["scope:m49"]
    assert not fewer[er.SCOPE_TYPE].resources


def test_an_envoy_that_reconnects_is_sent_only_what_it_lacks():
    import asyncio

    from runtime.scheduler.xds import XdsServer, _Stream

    async def run():
        xds = XdsServer()
        snap = snapshot.build(_hub(*[_model(f"m{i}", (1, st.AVAILABLE, {0: False}))
                                     for i in range(20)]))
        scopes, _ = xds._scoped(snap)
        stream = _Stream("envoy")  # after a scheduler restart Envoy reports what it holds
        stream.subscribed[er.SCOPE_TYPE] = set()
        stream.held[er.SCOPE_TYPE] = {n: v for n, (v, _) in scopes.items() if n != "scope:m4"}
        stream.answered.add(er.SCOPE_TYPE)
        await xds._push(stream, er.SCOPE_TYPE, scopes)
        return stream.outbox.get_nowait()

    response = asyncio.run(run())
    assert [r.name for r in response.resources] == ["scope:m4"]


def test_sticky_label_names_the_version():
    route = Route("exp.experiment", (Target("mlserver_0", 50, "iris_1"),
                                     Target("mlserver_1", 50, "iris2_1")), sticky=True)
    assert [er.route_label(t) for t in route.targets] == [":iris_1:", ":iris2_1:"]
