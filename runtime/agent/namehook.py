"""core2's name hook inside MLServer: serve a request by the model version named in its
`seldon-internal-model` header, and answer with that version's name and number as Seldon does.

Envoy sends `/v2/models/iris/infer` (or ModelInferRequest.model_name = "iris") to a replica with
`seldon-internal-model: iris_1`; MLServer holds that version as `iris_1`. The hook is three
symbol swaps made before MLServer is constructed, all in this process (no extra hop):

- `create_app` gains a tiny ASGI middleware that puts the header into a contextvar (REST);
- the gRPC servicer puts the same header from the call's metadata into the contextvar;
- the DataPlane resolves the name through the contextvar (or, for infer, the request headers
  MLServer already copies into `payload.parameters.headers`); infer responses and metadata
  answer as Seldon's do, with the version's name and number (`"model_name": "iris_1"`,
  `"model_version": "1"`; metadata `"name": "iris_1", "versions": ["1"]` and the tensors the
  server knows), and error messages keep the user's name;
- requests with the header get 400 with the OIP body `{"error": ...}` for bad input where stock
  MLServer answers 500 (model rejects the tensor) or FastAPI's 422 `{"detail": ...}`.

It also remembers when each model last served an inference and answers `GET /core2/usage`
with `{internal name: unix time}`: the agent's least-recently-used eviction reads it, because
requests to resident models go from Envoy straight to MLServer and never pass the agent.

Without the header every call behaves exactly like stock MLServer.
"""

import contextvars
import json
import struct
import time
from typing import Any

import grpc
import mlserver.grpc.server as grpc_server
import mlserver.grpc.utils as grpc_utils
import mlserver.rest.server as rest_server
import mlserver.server as mlserver_server
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mlserver.errors import MLServerError, ModelNotFound, ModelNotReady
from mlserver.grpc.servicers import InferenceServicer
from mlserver.handlers import DataPlane
from mlserver.types import InferenceRequest

from runtime.agent.headers import INTERNAL_MODEL_HEADER as HEADER
from runtime.agent.headers import USAGE_PATH

_HEADER_BYTES = HEADER.encode()
_internal: contextvars.ContextVar[str | None] = contextvars.ContextVar(HEADER, default=None)
last_inference: dict[str, float] = {}  # model name inside MLServer -> unix time


def _resolve(name: str, version: str | None, payload: InferenceRequest | None = None):
    """(name to look up, version, hooked) for this request; the header pins one version."""
    internal = _internal.get()
    if internal is None and payload is not None and payload.parameters is not None:
        headers = getattr(payload.parameters, "headers", None) or {}
        internal = headers.get(HEADER)
    if not internal:
        return name, version, False
    return internal, None, True


def _rename_error(err: MLServerError, internal: str, name: str) -> MLServerError:
    """Errors must not show the internal name either."""
    if internal != name and internal in str(err):
        renamed = MLServerError(str(err).replace(internal, name), status_code=err.status_code)
        return renamed
    return err


class NamedDataPlane(DataPlane):
    async def model_ready(self, name: str, version: str | None = None) -> bool:
        internal, version, _ = _resolve(name, version)
        try:
            return await super().model_ready(internal, version)
        except MLServerError as err:
            raise _rename_error(err, internal, name) from None

    async def model_metadata(self, name: str, version: str | None = None):
        internal, version, hooked = _resolve(name, version)
        try:
            metadata = await super().model_metadata(internal, version)
        except MLServerError as err:
            raise _rename_error(err, internal, name) from None
        if hooked:  # Seldon's answer: the version's name in the server, and its version
            metadata = metadata.model_copy(update={
                "name": internal, "versions": [_version_of(internal)]})
        return metadata

    async def infer(self, payload: InferenceRequest, name: str, version: str | None = None):
        internal, version, hooked = _resolve(name, version, payload)
        last_inference[internal] = time.time()
        try:
            response = await super().infer(payload, internal, version)
        except (ModelNotReady, ModelNotFound) as err:
            if not hooked:
                raise
            # The scheduler routed here, so the version is (re)loading on this server (after a
            # restart or an eviction): the caller did nothing wrong and should retry, as Envoy
            # does (503 / UNAVAILABLE are in the route's retry policy).
            raise MLServerError(f"model {name} is loading on this server; retry",
                                status_code=503) from err
        except MLServerError as err:
            raise _rename_error(err, internal, name) from None
        except (ValueError, TypeError) as err:
            if not hooked:
                raise
            # Stock MLServer answers a tensor the model cannot take (wrong shape, datatype,
            # feature count) with a bare 500; through core2 it is the caller's 400.
            raise MLServerError(f"invalid inference request for model {name}: {err}",
                                status_code=400) from None
        if hooked:
            _name_answer(response, internal)
        return response

    async def infer_stream(self, payloads, name: str, version: str | None = None):
        internal, version, hooked = _resolve(name, version)
        last_inference[internal] = time.time()
        async for response in super().infer_stream(payloads, internal, version):
            if hooked:
                _name_answer(response, internal)
            yield response


def _version_of(internal: str) -> str:
    """`iris_2` -> "2": the scheduler's version of the model, in its name in the server."""
    return internal.rpartition("_")[2]


def _name_answer(response, internal: str) -> None:
    """As Seldon Core 2 answers: `model_name` is the version that answered (`iris_1`, so a
    client sees which candidate of an experiment served it) and `model_version` its version."""
    response.model_name = internal
    response.model_version = _version_of(internal)


def _header_from(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            return value
    return None


class NamedInferenceServicer(InferenceServicer):
    """Sets the contextvar from the gRPC metadata for the calls that name a model."""

    async def _named(self, call, request, context):
        token = _internal.set(_header_from(context))
        try:
            return await call(request, context)
        finally:
            _internal.reset(token)

    async def ModelReady(self, request, context):
        return await self._named(super().ModelReady, request, context)

    async def ModelMetadata(self, request, context):
        return await self._named(super().ModelMetadata, request, context)

    async def ModelInfer(self, request, context):
        return await self._named(super().ModelInfer, request, context)

    def _InsertHeaders(self, request, context):
        """Raw contents that do not fit the datatype are the caller's error, not INTERNAL."""
        try:
            return super()._InsertHeaders(request, context)
        except (ValueError, TypeError, OverflowError, struct.error) as err:
            if not _internal.get():
                raise
            raise MLServerError(f"invalid inference request: {err}", status_code=400) from None

    async def ModelStreamInfer(self, requests_stream, context):
        _internal.set(_header_from(context))  # this RPC runs in its own task
        async for response in super().ModelStreamInfer(requests_stream, context):
            yield response


class InternalNameMiddleware:
    """ASGI middleware: copy the header into the contextvar for the REST handlers, and answer
    the agent's usage query."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if scope["path"] == USAGE_PATH:
                return await _send_usage(send)
            for key, value in scope["headers"]:
                if key == _HEADER_BYTES:
                    token = _internal.set(value.decode("latin-1"))
                    try:
                        return await self.app(scope, receive, send)
                    finally:
                        _internal.reset(token)
        return await self.app(scope, receive, send)


async def _send_usage(send) -> None:
    body = json.dumps(last_inference).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _validation_error(request, exc: RequestValidationError):
    """A body that is not a valid OIP request: stock FastAPI 422 without the header, the OIP
    error body `{"error": ...}` with 400 through core2."""
    if HEADER not in request.headers:
        return await request_validation_exception_handler(request, exc)
    problems = []
    for item in exc.errors():
        if item.get("type") == "json_invalid":
            problems.append(f"malformed JSON: {item.get('ctx', {}).get('error', item['msg'])}")
            continue
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {item['msg']}")
    return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=400)


def install() -> None:
    """Swap the three symbols; call once, before constructing `mlserver.MLServer`."""
    if mlserver_server.DataPlane is NamedDataPlane:
        return
    original_create_app = rest_server.create_app

    def create_app(*args, **kwargs):
        app = original_create_app(*args, **kwargs)
        app.add_middleware(InternalNameMiddleware)
        app.add_exception_handler(RequestValidationError, _validation_error)
        return app

    rest_server.create_app = create_app
    grpc_utils.STATUS_CODE_MAPPING[503] = grpc.StatusCode.UNAVAILABLE  # stock: UNKNOWN
    mlserver_server.DataPlane = NamedDataPlane
    grpc_server.InferenceServicer = NamedInferenceServicer
