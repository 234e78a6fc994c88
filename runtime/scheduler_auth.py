"""Authentication on the scheduler's API and agent ports: a bearer token, TLS, or mutual TLS.

Configured from the environment, the same for the scheduler and every client (CLI, agents,
dataflow services, Pulumi providers), so a secret never shows in a command line and a
Kubernetes Secret maps straight onto it:

  CORE2_SCHEDULER_TOKEN        bearer token; CORE2_SCHEDULER_TOKEN_FILE reads it from a file.
                               The scheduler then refuses calls without it; clients send it.
  CORE2_SCHEDULER_TLS_CERT     PEM files. Scheduler: its certificate and key (TLS on).
  CORE2_SCHEDULER_TLS_KEY      Client: its own certificate and key, for mutual TLS.
  CORE2_SCHEDULER_TLS_CA       Scheduler: the CA client certificates must chain to (mutual
                               TLS required). Client: the CA that signed the scheduler's
                               certificate (TLS on).
  CORE2_SCHEDULER_TLS_SERVER_NAME  Client: the name to check the scheduler's certificate
                               against when it differs from the address dialled (e.g. through
                               a port-forward to 127.0.0.1).

Nothing set: plaintext without authentication, as on a laptop. The xDS port stays plaintext
(only Envoy reaches it; the Pulumi NetworkPolicies admit nothing else).
"""

import hmac
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import grpc

TOKEN, TOKEN_FILE = "CORE2_SCHEDULER_TOKEN", "CORE2_SCHEDULER_TOKEN_FILE"
CERT, KEY, CA = "CORE2_SCHEDULER_TLS_CERT", "CORE2_SCHEDULER_TLS_KEY", "CORE2_SCHEDULER_TLS_CA"
SERVER_NAME = "CORE2_SCHEDULER_TLS_SERVER_NAME"
UNAUTHENTICATED = ("scheduler: missing or wrong bearer token "
                   f"(set {TOKEN} or {TOKEN_FILE} to the scheduler's token)")


class AuthConfigError(ValueError):
    """A setting names a file that cannot be read, or a half-configured key pair."""


def _read(env: Mapping[str, str], var: str) -> bytes | None:
    path = env.get(var)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AuthConfigError(f"{var}={path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class SchedulerAuth:
    token: str | None = None
    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SchedulerAuth":
        env = os.environ if env is None else env
        token = env.get(TOKEN) or None
        if token is None and (raw := _read(env, TOKEN_FILE)) is not None:
            token = raw.decode().strip() or None
        auth = cls(token, _read(env, CERT), _read(env, KEY), _read(env, CA),
                   env.get(SERVER_NAME) or None)
        if (auth.cert is None) != (auth.key is None):
            raise AuthConfigError(f"{CERT} and {KEY} must be set together")
        if auth.cert is not None:
            try:  # gRPC would only say "failed to bind" or fail every call
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(env[CERT], env[KEY])
            except ssl.SSLError as e:
                raise AuthConfigError(f"{CERT}={env[CERT]} and {KEY}={env[KEY]} are not a "
                                      f"certificate and its private key ({e.reason})") from None
        return auth

    def describe(self) -> str:
        tls = ("mutual TLS" if self.ca else "TLS") if self.cert else "plaintext"
        return f"{tls}, {'bearer token required' if self.token else 'no token'}"

    # ---- scheduler side ------------------------------------------------------------------
    def interceptors(self) -> list:
        return [_TokenCheck(self.token)] if self.token else []

    def add_port(self, server: grpc.aio.Server, address: str) -> None:
        if self.cert is None:
            server.add_insecure_port(address)
            return
        creds = grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                            require_client_auth=self.ca is not None)
        server.add_secure_port(address, creds)

    # ---- client side ---------------------------------------------------------------------
    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca is None and self.cert is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def _options(self) -> list[tuple[str, str | int]]:
        # gRPC's reconnect backoff grows to 120 s: after a 25 s scheduler outage a client
        # reached the restarted scheduler only 15.7 s after it listened again (1.7 s capped)
        options: list[tuple[str, str | int]] = [
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000)]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def channel(self, address: str) -> grpc.Channel:
        creds = self._credentials()
        ch = (grpc.secure_channel(address, creds, options=self._options()) if creds
              else grpc.insecure_channel(address, options=self._options()))
        return grpc.intercept_channel(ch, _TokenSend(self.token)) if self.token else ch

    def aio_channel(self, address: str) -> grpc.aio.Channel:
        creds = self._credentials()
        interceptors = ([_AioUnaryTokenSend(self.token), _AioStreamTokenSend(self.token)]
                        if self.token else None)
        if creds:
            return grpc.aio.secure_channel(address, creds, options=self._options(),
                                           interceptors=interceptors)
        return grpc.aio.insecure_channel(address, options=self._options(),
                                         interceptors=interceptors)


def _bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


class _TokenCheck(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = _bearer(token)[1].encode()

    async def intercept_service(self, continuation, details):
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(sent.encode(), self._expected):
            return await continuation(details)
        handler = await continuation(details)
        return _refuse(handler)


def _refuse(handler):
    """A handler of the same shape that answers UNAUTHENTICATED without running the call."""
    async def unary(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

    async def stream(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
        yield  # pragma: no cover - makes this an async generator

    if handler is None:
        return None
    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: list | None
    credentials: object
    wait_for_ready: bool | None
    compression: object


class _CallDetails(_Details, grpc.ClientCallDetails):
    pass


class _TokenSend(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._header = _bearer(token)

    def _with_token(self, d):
        return _CallDetails(d.method, d.timeout, [*(d.metadata or ()), self._header],
                            d.credentials, d.wait_for_ready, getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def _aio_with_token(d, header: tuple[str, str]):
    metadata = grpc.aio.Metadata(*(d.metadata or ()), header)
    return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials,
                                      d.wait_for_ready)


# grpc.aio files an interceptor under one kind only, hence one class per kind.
class _AioUnaryTokenSend(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self._header = _bearer(token)

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_aio_with_token(details, self._header), request)


class _AioStreamTokenSend(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._header = _bearer(token)

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_aio_with_token(details, self._header), request)
