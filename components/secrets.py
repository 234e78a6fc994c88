"""Secrets the runtime reads on a cluster: the scheduler's bearer token, as the environment
variable the scheduler and all its clients read (runtime.scheduler_auth), and Envoy's TLS
certificate, mounted as files (a `kubernetes.io/tls` Secret: tls.crt, tls.key, ca.crt)."""

from typing import Any

from runtime.scheduler_auth import TOKEN as TOKEN_ENV

TOKEN_KEY = "token"  # the key holding the token in the scheduler token Secret
ENVOY_TLS_DIR = "/etc/envoy/tls"
ENVOY_CA_DIR = "/etc/core2/envoy-ca"
ENVOY_CA_ENV = "CORE2_ENVOY_TLS_CA"


def scheduler_token_env(secret: str | None) -> list[dict]:
    if not secret:
        return []
    return [{"name": TOKEN_ENV,
             "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}}]


def envoy_tls_volume(secret: str, name: str, only_ca: bool = False) -> dict:
    # the key: readable by the pod's fsGroup only; the CA alone is public
    source: dict[str, Any] = {"secretName": secret, "defaultMode": 0o444 if only_ca else 0o440}
    if only_ca:  # clients need the CA, never the key
        source["items"] = [{"key": "ca.crt", "path": "ca.crt"}]
    return {"name": name, "secret": source}
