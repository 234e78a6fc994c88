"""Envoy bootstrap for a cluster: the same structure `core2 up` uses (runtime.envoy), with
the listener and admin on all interfaces and ADS pointed at the scheduler's Service."""

from runtime import envoy

XDS_CLUSTER = "xds_cluster"


def bootstrap(xds_host: str, xds_port: int = 9002, listen_port: int = 9000,
              admin_port: int = 9901, tls_dir: str | None = None) -> dict:
    """`tls_dir`: where a `kubernetes.io/tls` Secret is mounted (TLS on the listener)."""
    # 0.0.0.0: kubelet probes /ready on the admin port and the Service targets the listener
    return envoy.bootstrap(listen_port=listen_port, admin_port=admin_port, xds_host=xds_host,
                           xds_port=xds_port, listen_host="0.0.0.0",
                           tls_cert_file=f"{tls_dir}/tls.crt" if tls_dir else None,
                           tls_key_file=f"{tls_dir}/tls.key" if tls_dir else None)
