"""Snapshot (runtime.scheduler.routes) -> Envoy v3 resources: clusters, endpoints, routes.

Each backend (a set of server replicas, shared by every model version on them; or the pipeline
gateway) gets two clusters, `<name>_http` (HTTP/1.1 to the REST port) and `<name>_grpc`
(HTTP/2 to the gRPC port). Routes match the `seldon-model` header first, then the REST path.
Every request to a model replica carries `seldon-internal-model`, naming the version inside the
server; the response names the chosen version in `x-seldon-route`, which a client may send back
to stay on it."""

from dataclasses import replace

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from runtime.envoy import BUFFER_FILTER
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.scheduler.routes import Backend, Route, Snapshot, Target

ROUTE_CONFIG = "core2_routes"
MODEL_HEADER = "seldon-model"
INTERNAL_HEADER = "seldon-internal-model"
ROUTE_HEADER = "x-seldon-route"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
REQUEST_TIMEOUT_S = 120  # a request may wait for an evicted model to reload
# Envoy's local-reply config wraps it as {"error": ...} for REST (runtime.envoy.local_replies)
NOT_FOUND_BODY = ("no model, pipeline or experiment matches this request: check the name in "
                  "the path or the seldon-model header")
# Below the model servers' keep-alive (uvicorn's 5 s): Envoy must drop an idle connection
# before the server does, or a request sent on it as the server closes it fails with a 503.
UPSTREAM_IDLE_TIMEOUT_S = 3
NO_BUFFER = buffer_pb2.BufferPerRoute(disabled=True)


def _limits(limits: InferenceLimits) -> circuit_breaker_pb2.CircuitBreakers:
    """Overload answers a fast 503 instead of a queue that grows into timeouts."""
    most = wrappers_pb2.UInt32Value
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=most(value=limits.serverMaxRequests),
            max_requests=most(value=limits.serverMaxRequests),
            max_pending_requests=most(value=limits.serverMaxPendingRequests),
            max_retries=most(value=limits.serverMaxRequests))])


def cluster_names(backend: str) -> tuple[str, str]:
    return f"{backend}_http", f"{backend}_grpc"


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3)


def _cluster(name: str, http2: bool, limits: InferenceLimits | None) -> cluster_pb2.Cluster:
    """`limits`: a server's circuit breakers (None for the pipeline gateway, which
    every pipeline shares and which bounds its own work)."""
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        connect_timeout=duration_pb2.Duration(seconds=2),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
    )
    if limits is not None:
        c.circuit_breakers.CopyFrom(_limits(limits))
    explicit = hpo.HttpProtocolOptions.ExplicitHttpConfig(
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()) if http2 else \
        hpo.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions())
    opts = hpo.HttpProtocolOptions(
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=duration_pb2.Duration(seconds=UPSTREAM_IDLE_TIMEOUT_S)),
        explicit_http_config=explicit)
    any_opts = any_pb2.Any()
    any_opts.Pack(opts)
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(any_opts)
    return c


def _assignment(cluster: str, backend: Backend, grpc: bool) -> endpoint_pb2.ClusterLoadAssignment:
    lb = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address=ep.host, port_value=ep.grpc_port if grpc else ep.http_port))))
        for ep in backend.endpoints
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)])


def clusters(snapshot: Snapshot, keep: set[str] = frozenset(),
             limits: InferenceLimits = DEFAULT_LIMITS) -> dict[str, cluster_pb2.Cluster]:
    """Clusters for every backend, plus `keep` (backends still referenced by live routes)."""
    out = {}
    for name in sorted(set(snapshot.backends) | keep):
        http, grpc = cluster_names(name)
        backend = snapshot.backends.get(name)
        own = limits if backend is None or backend.model else None
        out[http] = _cluster(http, http2=False, limits=own)
        out[grpc] = _cluster(grpc, http2=True, limits=own)
    return out


def assignments(snapshot: Snapshot) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    out = {}
    for backend in snapshot.backends.values():
        http, grpc = cluster_names(backend.name)
        out[http] = _assignment(http, backend, grpc=False)
        out[grpc] = _assignment(grpc, backend, grpc=True)
    return out


def _header(name: str, exact: str) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=exact))


def _header_option(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def route_label(target: Target) -> str:
    """The value of x-seldon-route naming a model version (Seldon's `:name:` form)."""
    return f":{target.internal_name or target.backend}:"


def _action(targets, grpc: bool, route: Route, mirrored: bool) -> rc.RouteAction:
    weighted = []
    for t in targets:
        http, grpc_name = cluster_names(t.backend)
        req = [_header_option(INTERNAL_HEADER, t.internal_name)] if t.internal_name else []
        weighted.append(rc.WeightedCluster.ClusterWeight(
            name=grpc_name if grpc else http,
            weight=wrappers_pb2.UInt32Value(value=t.weight),
            request_headers_to_add=req,
            response_headers_to_add=[_header_option(ROUTE_HEADER, route_label(t))],
        ))
    action = rc.RouteAction(
        weighted_clusters=rc.WeightedCluster(clusters=weighted),
        timeout=duration_pb2.Duration(seconds=REQUEST_TIMEOUT_S),
        retry_policy=rc.RetryPolicy(
            retry_on="connect-failure,refused-stream,reset-before-request",
            num_retries=wrappers_pb2.UInt32Value(value=3)),
    )
    if route.mirror and mirrored and route.mirror_percent > 0:
        mirror = route.mirror
        http, grpc_name = cluster_names(mirror.backend)
        # The copy must name the mirror's own version, not the one the route chose.
        mutations = [mutation_rules_pb2.HeaderMutation(
            append=_header_option(INTERNAL_HEADER, mirror.internal_name))] \
            if mirror.internal_name else []
        action.request_mirror_policies.append(rc.RouteAction.RequestMirrorPolicy(
            cluster=grpc_name if grpc else http,
            request_headers_mutations=mutations,
            runtime_fraction=base_pb2.RuntimeFractionalPercent(
                default_value=percent_pb2.FractionalPercent(
                    numerator=route.mirror_percent,
                    denominator=percent_pb2.FractionalPercent.HUNDRED))))
    return action


def _matches(route: Route):
    """(RouteMatch, is_grpc, sticky target or None) in priority order for one Route."""
    out = []
    sticky = [t for t in route.targets] if route.sticky and len(route.targets) > 1 else []
    for grpc in (True, False):
        for t in sticky:
            m = rc.RouteMatch(prefix="/", headers=[
                _header(MODEL_HEADER, route.name), _header(ROUTE_HEADER, route_label(t))])
            if grpc:
                m.grpc.SetInParent()
            out.append((m, grpc, t))
        m = rc.RouteMatch(prefix="/", headers=[_header(MODEL_HEADER, route.name)])
        if grpc:
            m.grpc.SetInParent()
        out.append((m, grpc, None))
    return out


def _path_matches(route: Route):
    out = []
    for prefix in route.path_prefixes:
        for t in (route.targets if route.sticky and len(route.targets) > 1 else []):
            out.append((rc.RouteMatch(path_separated_prefix=prefix,
                                      headers=[_header(ROUTE_HEADER, route_label(t))]), t))
        out.append((rc.RouteMatch(path_separated_prefix=prefix), None))
    return out


def _not_found(name: str, match: rc.RouteMatch) -> rc.Route:
    return rc.Route(
        name=name, match=match,
        direct_response=rc.DirectResponseAction(
            status=404, body=base_pb2.DataSource(inline_string=NOT_FOUND_BODY)),
        response_headers_to_add=[_header_option("content-type", "application/json")])


def _route_pieces(route: Route, live: tuple[Target, ...], mirrored: bool) -> tuple[bytes, bytes]:
    """One Route's entries in the virtual host, encoded: (header-matched, path-matched)."""
    header_routes, path_routes = [], []
    for match, grpc, t in _matches(route):
        r = rc.Route(name=route.name, match=match,
                     route=_action((replace(t, weight=1),) if t else live, grpc, route, mirrored))
        if grpc:  # a gRPC stream is passed through, never buffered whole
            r.typed_per_filter_config[BUFFER_FILTER].Pack(NO_BUFFER)
        header_routes.append(r)
    for match, t in _path_matches(route):
        path_routes.append(rc.Route(
            name=route.name, match=match,
            route=_action((replace(t, weight=1),) if t else live, False, route, mirrored)))
    return (rc.VirtualHost(routes=header_routes).SerializeToString(deterministic=True),
            rc.VirtualHost(routes=path_routes).SerializeToString(deterministic=True))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RouteTable:
    """Encodes the one RouteConfiguration from per-Route pieces kept between snapshots, so a
    change costs the routes it touches plus a byte join, not a rebuild of every route (at
    10,000 models the whole table is megabytes of protobuf). Concatenated encodings of a
    repeated field are the encoding of the concatenated list, which is what makes it work."""

    def __init__(self):
        self._pieces: dict[tuple, tuple[bytes, bytes]] = {}
        vhost = rc.VirtualHost(name="core2", domains=["*"])
        self._vhost_head = vhost.SerializeToString()
        # seldon-model overrides the path: a name no route knows is a 404 even on a known path.
        unknown = _not_found("unknown_seldon_model", rc.RouteMatch(
            prefix="/", headers=[rc.HeaderMatcher(name=MODEL_HEADER, present_match=True)]))
        self._unknown_header = rc.VirtualHost(routes=[unknown]).SerializeToString()
        self._not_found = rc.VirtualHost(routes=[_not_found(
            "not_found", rc.RouteMatch(prefix="/"))]).SerializeToString()
        self._config_head = route_pb2.RouteConfiguration(name=ROUTE_CONFIG).SerializeToString()

    def encode(self, snapshot: Snapshot) -> bytes:
        pieces = {}
        for route in snapshot.routes:
            live = tuple(t for t in route.targets if t.backend in snapshot.backends)
            if not live:
                continue
            mirrored = route.mirror is not None and route.mirror.backend in snapshot.backends
            key = (route, live, mirrored)
            pieces[key] = self._pieces.get(key) or _route_pieces(route, live, mirrored)
        self._pieces = pieces  # routes gone from the snapshot are forgotten
        vhost = b"".join([self._vhost_head, *(h for h, _ in pieces.values()),
                          self._unknown_header, *(p for _, p in pieces.values()),
                          self._not_found])
        return self._config_head + b"\x12" + _varint(len(vhost)) + vhost  # field 2, bytes


def route_configuration(snapshot: Snapshot) -> route_pb2.RouteConfiguration:
    """The same table as a message (tests, debugging)."""
    return route_pb2.RouteConfiguration.FromString(RouteTable().encode(snapshot))
