"""MLServer's gRPC server answers a message it cannot decode with UNKNOWN and a tensor whose raw
contents do not fit its datatype with INTERNAL; both are the caller's fault, so core2 answers
INVALID_ARGUMENT with the reason. Installed in the model server process before MLServer builds
its gRPC server (see runtime.agent.modelserver)."""

import grpc
import mlserver.grpc.server as grpc_server
from google.protobuf.message import DecodeError


class _Undecodable:
    def __init__(self, error: DecodeError):
        self.error = error


def _guarded(deserialize):
    def run(raw: bytes):
        try:
            return deserialize(raw)
        except DecodeError as e:
            return _Undecodable(e)
    return run


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Unary calls: a request that does not decode is refused before any handler runs."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or not handler.request_deserializer:
            return handler
        behaviour, method = handler.unary_unary, details.method.rsplit("/", 1)[-1]

        async def refuse_undecodable(request, context):
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{method}: the request is not a valid message: "
                                    f"{request.error}")
            return await behaviour(request, context)

        return handler._replace(request_deserializer=_guarded(handler.request_deserializer),
                                unary_unary=refuse_undecodable)


class _AioWithGuard:
    """`grpc.aio` as MLServer's server module sees it, with the guard first in every server."""

    def __getattr__(self, name: str):
        return getattr(grpc.aio, name)

    @staticmethod
    def server(*args, interceptors=(), **kwargs):
        return grpc.aio.server(*args, interceptors=[DecodeGuard(), *interceptors], **kwargs)


def install() -> None:
    grpc_server.aio = _AioWithGuard()
