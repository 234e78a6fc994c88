"""The agent's reload-and-forward proxy, REST and gRPC.

For MLServer, Envoy sends a model's traffic here only while the model is evicted. The request
names the model in `seldon-internal-model`; the agent reloads it, forwards the request unchanged
to the model server and returns the server's answer. gRPC is forwarded as raw bytes.

For Triton (`--server-kind triton`), which has no name hook, every request comes here: the
proxy renames it to the internal name (the REST path; the gRPC request's model name, the one
place the inference protos are parsed) and the server's error messages back to the user's name.
Answers need no change: Triton serves the version as `<internal name>/<version>/`
(runtime.agent.triton_layout), so it answers as the name hook makes MLServer answer.
"""

import functools
import logging
import re
import time
from collections.abc import Callable

import aiohttp
import grpc
from aiohttp import web
from google.protobuf.message import DecodeError, Message

from runtime.agent.agent import Agent, CannotLoad, NotPlaced
from runtime.agent.headers import INTERNAL_MODEL_HEADER as HEADER
from runtime.agent.server_client import ServerError

log = logging.getLogger("core2.agent.proxy")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
               "proxy-connection", "upgrade", "te", "trailer"}
_MODEL_IN_PATH = re.compile(r"^/v2/models/([^/]+)")
_MODEL_AND_VERSION_IN_PATH = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?")


def _oip_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RestProxy:
    def __init__(self, agent: Agent, server_http_port: int):
        self.agent = agent
        self.base = f"http://127.0.0.1:{server_http_port}"
        self.session: aiohttp.ClientSession | None = None
        self.rename = agent.config.proxied

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app) -> None:
        # The body is passed through as the server sent it (gzip stays gzip).
        self.session = aiohttp.ClientSession(auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=600))

    async def _close(self, _app) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        internal = request.headers.get(HEADER)
        match = _MODEL_IN_PATH.match(request.path)
        shown = match.group(1) if match else "requested"
        if not internal:
            return _oip_error(400, f"missing {HEADER} header")
        try:
            await self.agent.ensure_resident(internal)
        except NotPlaced:
            return _oip_error(404, f"Model {shown} not found")
        except (CannotLoad, ServerError) as e:
            log.warning("reload of %s failed: %s", internal, e)
            return _oip_error(503, f"Model {shown} could not be reloaded: {e}")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        path = request.path_qs
        renamed = self.rename and match is not None
        if renamed:  # the version is the internal name's: a /versions/N part is dropped
            path = _MODEL_AND_VERSION_IN_PATH.sub(f"/v2/models/{internal}", path, count=1)
            self.agent.placements.note_usage({internal: time.time()})
        assert self.session is not None  # opened on the app's startup
        try:
            async with self.session.request(request.method, self.base + path,
                                            headers=headers, data=body) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in _HOP_BY_HOP}
                if renamed and upstream.status >= 400:
                    payload = payload.replace(internal.encode(), shown.encode())
                return web.Response(status=upstream.status, body=payload, headers=out)
        except aiohttp.ClientError as e:
            return _oip_error(502, f"model server unreachable: {e}")


class GrpcProxy(grpc.GenericRpcHandler):
    """Any unary method (and ModelStreamInfer) forwarded to the model server: byte for byte,
    or renamed to the internal name for a server without the name hook (Triton)."""

    def __init__(self, agent: Agent, server_grpc_port: int):
        self.agent = agent
        self.rename = agent.config.proxied
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{server_grpc_port}",
            options=[("grpc.max_send_message_length", -1),
                     ("grpc.max_receive_message_length", -1)])

    def service(self, handler_call_details):
        method = handler_call_details.method
        rename = _renamer(method) if self.rename else None
        if method.endswith("/ModelStreamInfer"):
            async def stream(requests, context):
                internal = await self._resident(context)
                if rename is not None:
                    requests = (rename(r, internal)[0] async for r in requests)
                call = self.channel.stream_stream(method)(requests,
                                                          metadata=_forwarded(context))
                try:
                    async for response in call:
                        yield response
                except grpc.aio.AioRpcError as e:
                    await context.abort(e.code(), e.details(), e.trailing_metadata())
            return grpc.stream_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context):
            internal = await self._resident(context)
            shown = None
            if rename is not None:
                try:
                    request, shown = rename(request, internal)
                except DecodeError as e:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"invalid inference request: {e}")
                self.agent.placements.note_usage({internal: time.time()})
            call = self.channel.unary_unary(method)(request, metadata=_forwarded(context))
            try:
                response = await call
            except grpc.aio.AioRpcError as e:
                details = e.details() or ""
                if shown:
                    details = details.replace(internal, shown)
                await context.abort(e.code(), details, e.trailing_metadata())
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            return response
        return grpc.unary_unary_rpc_method_handler(unary)

    async def _resident(self, context) -> str:
        """The internal name the request is for, resident in the server."""
        internal: str = dict(context.invocation_metadata() or ()).get(HEADER, "")
        if not internal:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"missing {HEADER} header")
        try:
            await self.agent.ensure_resident(internal)
        except NotPlaced:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Model not found")
        except (CannotLoad, ServerError) as e:
            log.warning("reload of %s failed: %s", internal, e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Model could not be reloaded: {e}")
        return internal


def _forwarded(context) -> tuple:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ())
                 if not k.startswith((":", "grpc-")))


_Rename = Callable[[bytes, str], tuple[bytes, str]]


@functools.cache
def _renamer(method: str) -> _Rename | None:
    """For the methods that name a model: (request bytes, internal name) -> (the request naming
    the internal name instead, the name it gave). The internal name pins the version served,
    so a requested version is dropped."""
    from runtime.pb import grpc_service_pb2 as pb  # only proxied servers parse requests

    kinds: dict[str, tuple[type[Message], str, str]] = {
        "ModelInfer": (pb.ModelInferRequest, "model_name", "model_version"),
        "ModelStreamInfer": (pb.ModelInferRequest, "model_name", "model_version"),
        "ModelMetadata": (pb.ModelMetadataRequest, "name", "version"),
        "ModelReady": (pb.ModelReadyRequest, "name", "version")}
    kind = kinds.get(method.rpartition("/")[2])
    if kind is None:
        return None
    message, name_field, version_field = kind

    def rename(request: bytes, internal: str) -> tuple[bytes, str]:
        parsed = message.FromString(request)
        shown = getattr(parsed, name_field)
        setattr(parsed, name_field, internal)
        setattr(parsed, version_field, "")
        return parsed.SerializeToString(), shown

    return rename
