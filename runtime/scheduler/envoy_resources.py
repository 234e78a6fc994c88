"""Snapshot (runtime.scheduler.routes) -> Envoy v3 resources: clusters, endpoints, routes.

Each backend (a set of server replicas, shared by every model version on them; or the pipeline
gateway) gets two clusters, `<name>_http` (HTTP/1.1 to the REST port) and `<name>_grpc`
(HTTP/2 to the gRPC port). Routes match the `seldon-model` header first, then the REST path.
Every request to a model replica carries `seldon-internal-model`, naming the version inside the
server; the response names the chosen version in `x-seldon-route`, which a client may send back
to stay on it."""

import json
from dataclasses import replace

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from runtime.envoy import BUFFER_FILTER, EXPERIMENT_HEADER, ROUTE_HEADER
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.scheduler.routes import FEEDBACK, Backend, Route, Snapshot, Target

INTERNAL_HEADER = "seldon-internal-model"
FEEDBACK_GRPC_PREFIX = "/core2.feedback.Feedback/"
FEEDBACK_REST_PATH = r"/v2/(models|pipelines)/[^/]+/feedback"
REQUEST_ID_HEADER = "x-request-id"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPE_TYPE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
REQUEST_TIMEOUT_S = 120  # a request may wait for an evicted model to reload
# Below the model servers' keep-alive (uvicorn's 5 s): Envoy must drop an idle connection
# before the server does, or a request sent on it as the server closes it fails with a 503.
UPSTREAM_IDLE_TIMEOUT_S = 3
NO_BUFFER = buffer_pb2.BufferPerRoute(disabled=True)
# tritonclient.http's default (binary_data=True) sends tensors as binary data after a JSON
# header of this length; MLServer and the pipeline gateway read JSON only.
BINARY_TENSOR_HEADER = "inference-header-content-length"
BINARY_TENSOR_ERROR = json.dumps({"error": (
    "binary tensor data (the Inference-Header-Content-Length extension) is not supported "
    "on REST: send JSON tensors (tritonclient.http: set_data_from_numpy(..., "
    "binary_data=False) and InferRequestedOutput(..., binary_data=False)) or use gRPC")})


def _packed(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


# Retried, on another replica when there is one: a connection that failed before the request
# went out, and a model server's 503 / UNAVAILABLE for a version it is (re)loading (after a
# restart or an eviction). Envoy's own overflow 503s are local replies and never retried.
RETRY_POLICY = rc.RetryPolicy(
    retry_on="connect-failure,refused-stream,reset-before-request,retriable-status-codes,"
             "unavailable",
    retriable_status_codes=[503],
    num_retries=wrappers_pb2.UInt32Value(value=3),
    retry_back_off=rc.RetryPolicy.RetryBackOff(
        base_interval=duration_pb2.Duration(nanos=100_000_000),
        max_interval=duration_pb2.Duration(nanos=500_000_000)),
    retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
        name="envoy.retry_host_predicates.previous_hosts",
        typed_config=_packed(previous_hosts_pb2.PreviousHostsPredicate()))],
    host_selection_retry_max_attempts=3)


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


def clusters(snapshot: Snapshot, keep: set[str] | frozenset[str] = frozenset(),
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
        retry_policy=RETRY_POLICY,
    )
    if route.mirror and mirrored and route.mirror_percent > 0:
        mirror = route.mirror
        http, grpc_name = cluster_names(mirror.backend)
        # The copy must name the mirror's own version, not the one the route chose, and
        # carry its own request id (a pipeline gateway holds one request per id in flight).
        mutations = [mutation_rules_pb2.HeaderMutation(append=_header_option(
            REQUEST_ID_HEADER, "%REQ(x-request-id)%-mirror"))]
        if mirror.internal_name:
            mutations.append(mutation_rules_pb2.HeaderMutation(
                append=_header_option(INTERNAL_HEADER, mirror.internal_name)))
        action.request_mirror_policies.append(rc.RouteAction.RequestMirrorPolicy(
            cluster=grpc_name if grpc else http,
            request_headers_mutations=mutations,
            runtime_fraction=base_pb2.RuntimeFractionalPercent(
                default_value=percent_pb2.FractionalPercent(
                    numerator=route.mirror_percent,
                    denominator=percent_pb2.FractionalPercent.HUNDRED))))
    return action


def _matches(route: Route):
    """(RouteMatch, is_grpc, sticky target or None) in priority order for one Route. The
    scope already chose the name (seldon-model), so only the protocol and a sticky
    `x-seldon-route` remain to match."""
    out: list[tuple[rc.RouteMatch, bool, Target | None]] = []
    sticky = [t for t in route.targets] if route.sticky and len(route.targets) > 1 else []
    for grpc in (True, False):
        for t in sticky:
            # `contains`: Seldon's clients send back labels for a pipeline's steps too
            # (":add10_1: :p.pipeline:"); the colons keep ":a_1:" from matching ":a_12:"
            m = rc.RouteMatch(prefix="/", headers=[rc.HeaderMatcher(
                name=ROUTE_HEADER, string_match=string_pb2.StringMatcher(
                    contains=route_label(t)))])
            if grpc:
                m.grpc.SetInParent()
            out.append((m, grpc, t))
        m = rc.RouteMatch(prefix="/")
        if grpc:
            m.grpc.SetInParent()
        out.append((m, grpc, None))
    return out


def route_config_name(route: str) -> str:
    return f"route:{route}"


def _feedback_routes(route: Route) -> list[rc.Route]:
    """Feedback for answers given under this name goes to the scheduler's feedback service
    (REST POST .../feedback, gRPC core2.feedback.Feedback); matched before inference."""
    http, grpc_name = cluster_names(FEEDBACK)
    rest = rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=FEEDBACK_REST_PATH))
    grpc = rc.RouteMatch(prefix=FEEDBACK_GRPC_PREFIX)
    grpc.grpc.SetInParent()
    return [rc.Route(name=f"{route.name}.feedback", match=m,
                     route=rc.RouteAction(cluster=cluster,
                                          timeout=duration_pb2.Duration(seconds=30)))
            for m, cluster in ((grpc, grpc_name), (rest, http))]


def _binary_tensors_refused(route: Route) -> rc.Route:
    """A clear 400 for REST requests with binary tensor data, instead of the JSON decode
    error the model server would answer."""
    return rc.Route(
        name=f"{route.name}.binary", match=rc.RouteMatch(prefix="/", headers=[
            rc.HeaderMatcher(name=BINARY_TENSOR_HEADER, present_match=True)]),
        direct_response=rc.DirectResponseAction(
            status=400, body=base_pb2.DataSource(inline_string=BINARY_TENSOR_ERROR)),
        response_headers_to_add=[_header_option("content-type", "application/json")])


def _route_config(route: Route, live: tuple[Target, ...], mirrored: bool) -> bytes:
    routes = _feedback_routes(route) if route.feedback else []
    routes.append(_binary_tensors_refused(route))
    for match, grpc, t in _matches(route):
        r = rc.Route(name=route.name, match=match,
                     route=_action((replace(t, weight=1),) if t else live, grpc, route, mirrored))
        if grpc:  # a gRPC stream is passed through, never buffered whole
            r.typed_per_filter_config[BUFFER_FILTER].Pack(NO_BUFFER)
        if route.experiment:
            r.request_headers_to_add.append(_header_option(EXPERIMENT_HEADER, route.experiment))
        routes.append(r)
    return route_pb2.RouteConfiguration(name=route_config_name(route.name), virtual_hosts=[
        rc.VirtualHost(name="core2", domains=["*"], routes=routes)]).SerializeToString(
        deterministic=True)


def _scope(route: Route) -> bytes:
    return scoped_route_pb2.ScopedRouteConfiguration(
        name=f"scope:{route.name}", route_configuration_name=route_config_name(route.name),
        key=scoped_route_pb2.ScopedRouteConfiguration.Key(fragments=[
            scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=route.name)])
    ).SerializeToString(deterministic=True)


class ScopeTable:
    """One routing scope per name Envoy routes (a model, `<p>.pipeline`, `<e>.experiment`),
    keyed by the `seldon-model` header (Envoy's Lua filter derives it from a REST path that
    lacks it, runtime.envoy), each with its own small RouteConfiguration. A change touches
    only the scopes of the names it changes: Envoy gets just those route configurations, and
    Envoy's per-request lookup is a hash of the name, not a scan of every route. The encoded
    scopes and route configurations are kept between snapshots, and a snapshot from the same
    scheduler says which routes changed (Snapshot.changed_since), so the cost follows the
    change, not the number of routes."""

    def __init__(self):
        self._keys: dict[str, tuple] = {}    # route name -> what its encoding was made from
        self.scopes: dict[str, bytes] = {}   # "scope:<name>" -> encoding
        self.routes: dict[str, bytes] = {}   # "route:<name>" -> encoding
        self._seen: Snapshot | None = None

    def update(self, snapshot: Snapshot) -> tuple[dict[str, bytes | None],
                                                  dict[str, bytes | None]]:
        """Take in `snapshot`; return the scopes and the route configurations that changed,
        by resource name (None: gone)."""
        names = snapshot.changed_since(self._seen)
        if names is None:  # another scheduler's snapshot, or too old: compare every route
            names = set(snapshot.routes) | set(self._keys)
        self._seen = snapshot
        scopes: dict[str, bytes | None] = {}
        routes: dict[str, bytes | None] = {}
        for name in names:
            key = None
            route = snapshot.routes.get(name)
            if route is not None:
                live = tuple(t for t in route.targets if t.backend in snapshot.backends)
                mirrored = route.mirror is not None and route.mirror.backend in snapshot.backends
                key = (route, live, mirrored) if live else None
            if self._keys.get(name) == key:
                continue
            scope_name, config_name = f"scope:{name}", route_config_name(name)
            if key is None:
                del self._keys[name], self.scopes[scope_name], self.routes[config_name]
                scopes[scope_name] = routes[config_name] = None
                continue
            self._keys[name] = key
            if scope_name not in self.scopes:  # a scope depends on the name alone
                self.scopes[scope_name] = scopes[scope_name] = _scope(key[0])
            config = _route_config(*key)
            if self.routes.get(config_name) != config:
                self.routes[config_name] = routes[config_name] = config
        return scopes, routes

    def encode(self, snapshot: Snapshot) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Every scope and route configuration of `snapshot`, by resource name."""
        self.update(snapshot)
        return dict(self.scopes), dict(self.routes)


def route_configurations(snapshot: Snapshot) -> dict[str, route_pb2.RouteConfiguration]:
    """The route configuration of each name, as messages (tests, debugging)."""
    _, routes = ScopeTable().encode(snapshot)
    return {name.removeprefix("route:"): route_pb2.RouteConfiguration.FromString(b)
            for name, b in routes.items()}
