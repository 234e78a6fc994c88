"""The agent's reload-and-forward proxy, REST and gRPC.

Envoy sends a model's traffic here only while the model is evicted. The request names the
model in `seldon-internal-model`; the agent reloads it, forwards the request unchanged to the
model server and returns the server's answer. gRPC is forwarded as raw bytes (no proto
parsing, so this process never imports the inference protos).
"""

import logging
import re

import aiohttp
import grpc
from aiohttp import web

from runtime.agent.agent import Agent, CannotLoad, NotPlaced
from runtime.agent.headers import INTERNAL_MODEL_HEADER as HEADER
from runtime.agent.server_client import ServerError

log = logging.getLogger("core2.agent.proxy")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
               "proxy-connection", "upgrade", "te", "trailer"}
_MODEL_IN_PATH = re.compile(r"^/v2/models/([^/]+)")


def _oip_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RestProxy:
    def __init__(self, agent: Agent, server_http_port: int):
        self.agent = agent
        self.base = f"http://127.0.0.1:{server_http_port}"
        self.session: aiohttp.ClientSession | None = None

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
        try:
            async with self.session.request(request.method, self.base + request.path_qs,
                                            headers=headers, data=body) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except aiohttp.ClientError as e:
            return _oip_error(502, f"model server unreachable: {e}")


class GrpcProxy(grpc.GenericRpcHandler):
    """Any unary method (and ModelStreamInfer) forwarded byte for byte to the model server."""

    def __init__(self, agent: Agent, server_grpc_port: int):
        self.agent = agent
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{server_grpc_port}",
            options=[("grpc.max_send_message_length", -1),
                     ("grpc.max_receive_message_length", -1)])

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method.endswith("/ModelStreamInfer"):
            async def stream(requests, context):
                await self._resident(context)
                call = self.channel.stream_stream(method)(requests,
                                                          metadata=_forwarded(context))
                try:
                    async for response in call:
                        yield response
                except grpc.aio.AioRpcError as e:
                    await context.abort(e.code(), e.details(), e.trailing_metadata())
            return grpc.stream_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context):
            await self._resident(context)
            call = self.channel.unary_unary(method)(request, metadata=_forwarded(context))
            try:
                response = await call
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details(), e.trailing_metadata())
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            return response
        return grpc.unary_unary_rpc_method_handler(unary)

    async def _resident(self, context) -> None:
        internal = dict(context.invocation_metadata() or ()).get(HEADER)
        if not internal:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"missing {HEADER} header")
        try:
            await self.agent.ensure_resident(internal)
        except NotPlaced:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Model not found")
        except (CannotLoad, ServerError) as e:
            log.warning("reload of %s failed: %s", internal, e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Model could not be reloaded: {e}")


def _forwarded(context) -> tuple:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ())
                 if not k.startswith((":", "grpc-")))
