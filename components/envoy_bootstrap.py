"""Envoy bootstrap for a cluster: static listener whose routes come over ADS from the scheduler.

Mirrors the local bootstrap shape: node id/cluster, admin, `xds_cluster` (HTTP/2 to the
scheduler's xDS port), `dynamic_resources` with ADS for clusters, and one static listener on
the OIP port whose HTTP connection manager takes its route table over RDS via ADS.
"""

ROUTE_CONFIG_NAME = "core2"  # the RouteConfiguration the scheduler serves over ADS
XDS_CLUSTER = "xds_cluster"


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def bootstrap(xds_host: str, xds_port: int = 9002, listen_port: int = 9000,
              admin_port: int = 9901, node_id: str = "core2-envoy") -> dict:
    ads = {"ads": {}, "resource_api_version": "V3"}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": ads},
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    xds_cluster = {
        "name": XDS_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                         ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(xds_host,
                                                                               xds_port)}}]}],
        },
    }
    return {
        "node": {"id": node_id, "cluster": "core2"},
        "admin": {"address": _address("0.0.0.0", admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
        },
        "static_resources": {
            "listeners": [{
                "name": "oip",
                "address": _address("0.0.0.0", listen_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": [xds_cluster],
        },
    }
