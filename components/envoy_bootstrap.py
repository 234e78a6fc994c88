"""Envoy bootstrap for a cluster: the same structure `core2 up` uses (runtime.envoy), with the
inference listener on all interfaces, ADS pointed at the scheduler's Service, and the admin
interface on loopback only.

The admin API can stop the server, drop its config and fail health checks; on 0.0.0.0 any pod
the NetworkPolicies let in could call it. So it listens on 127.0.0.1, and a small `health`
listener on all interfaces forwards exactly two read-only admin paths to it: `/ready` (the
kubelet's readiness probe; 503 once the preStop hook has failed health checks) and
`/stats/prometheus` (Prometheus' scrape).
"""

from typing import Any

from runtime import envoy
from runtime.limits import DEFAULT_LIMITS, InferenceLimits
from runtime.tracing import TracingConfig

XDS_CLUSTER = "xds_cluster"
ADMIN_CLUSTER = "admin_loopback"
LOOPBACK = "127.0.0.1"
HEALTH_PATHS = ("/ready", "/stats/prometheus")


def _health_listener(port: int) -> dict:
    routes: list[dict[str, Any]] = [
        {"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}} for path in HEALTH_PATHS]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    return {
        "name": "core2_health",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": envoy.HCM, "stat_prefix": "health",
                "route_config": {"name": "health", "virtual_hosts": [
                    {"name": "health", "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": envoy.ROUTER}}],
            },
        }]}],
    }


def _admin_cluster(admin_port: int) -> dict:
    return {"name": ADMIN_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": ADMIN_CLUSTER, "endpoints": [{
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": LOOPBACK, "port_value": admin_port}}}}]}]}}


def bootstrap(xds_host: str, xds_port: int = 9002, listen_port: int = 9000,
              admin_port: int = 9901, tls_dir: str | None = None,
              health_port: int = 9903, limits: InferenceLimits = DEFAULT_LIMITS,
              tracing: TracingConfig | None = None) -> dict:
    """`tls_dir`: where a `kubernetes.io/tls` Secret is mounted (TLS on the listener)."""
    # 0.0.0.0: the Service targets the inference listener on the pod IP
    boot = envoy.bootstrap(listen_port=listen_port, admin_port=admin_port, xds_host=xds_host,
                           xds_port=xds_port, listen_host="0.0.0.0",
                           tls_cert_file=f"{tls_dir}/tls.crt" if tls_dir else None,
                           tls_key_file=f"{tls_dir}/tls.key" if tls_dir else None,
                           limits=limits, otlp=tracing.otlpEndpoint if tracing else None,
                           sample_percent=tracing.samplePercent if tracing else 100.0)
    boot["admin"]["address"]["socket_address"]["address"] = LOOPBACK
    static = boot["static_resources"]
    static["listeners"].append(_health_listener(health_port))
    static["clusters"].append(_admin_cluster(admin_port))
    return boot
