"""Pipeline gateway: synchronous REST and gRPC Open Inference Protocol in front of the pipeline
topics. A call produces to the pipeline's input topic (key = request id) and waits for that key
on the pipeline's output topic or the errors topic.

    python -m runtime.dataflow.pipelinegateway --scheduler H:P --kafka-bootstrap H:P \
        --http-port P --grpc-port P
"""

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Mapping

import grpc
from aiohttp import web
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec
from google.protobuf.message import DecodeError
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import Field

from runtime import kafka, tracing
from runtime.dataflow import service
from runtime.dataflow.kafkastats import KAFKA_REQUESTS
from runtime.dataflow.pacing import Pacer
from runtime.dataflow.records import IDLE_WAIT_S, decode, encode, headers_of, key_of, next_batch
from runtime.dataflow.subscription import StallWatch
from runtime.dataflow.topicguard import TopicGuard
from runtime.dataflow.validate import InvalidInput, check_request, parse_request
from runtime.kafka import H_DEADLINE, H_PIPELINE, H_VERSION, KafkaConfig
from runtime.oip import TensorError, request_to_json, response_from_json
from runtime.pb import grpc_service_pb2 as oip
from runtime.pb import grpc_service_pb2_grpc as oip_grpc
from runtime.retry import GaveUp, Retry, retry
from runtime.settings import load
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger("pipelinegateway")
INFER_TOTAL = Counter("seldon_pipeline_infer", "pipeline inference requests",
                      ["pipeline", "method_type", "code"])
INFER_SECONDS = Histogram("seldon_pipeline_infer_seconds", "pipeline inference latency",
                          ["pipeline", "method_type"],
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
TIMEOUT_HEADER = "seldon-timeout-ms"
MAX_TIMEOUT_MS = 86_400_000   # a day: beyond it a timeout header is a mistake
MAX_REQUEST_ID = 256
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20


class PipelineGatewaySettings(service.DataflowSettings):
    host: str = Field("0.0.0.0", description="address the REST and gRPC ports bind")
    http_port: int = Field(9010, description="REST port (also /metrics)")
    grpc_port: int = Field(9011, description="gRPC port")
    timeout: float = Field(30, description="seconds a call waits for its answer")
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, description=(
        "largest request body (REST) or message (gRPC) accepted; larger ones get 413 / "
        "RESOURCE_EXHAUSTED (default 16 MiB)"))


class InferError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PipelineGateway(service.Role):
    component = "gateway"

    def __init__(self, cfg: KafkaConfig, timeout_s: float = 30,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 host: str = "0.0.0.0", http_port: int = 9010, grpc_port: int = 9011):
        self.cfg, self.timeout_s = cfg, timeout_s
        self.max_request_bytes = max_request_bytes
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.versions: dict[str, int] = {}
        self.ready: set[str] = set()
        self._lock = threading.Lock()
        self._todo: set[str] = set()
        self._waiters: dict[str, tuple[asyncio.Future, str]] = {}
        self._reading: list[TopicPartition] = []   # what the consumer was assigned
        # why the gateway cannot serve (Kafka unreachable or refusing it), or None: its
        # readiness (/v2/health/ready)
        self._kafka_fault: str | None = "not connected to Kafka yet"
        self._guard: TopicGuard | None = None
        self._stop = threading.Event()   # run's
        self.producer: Producer   # made by run

    # -- control --------------------------------------------------------------------------
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None:
        with self._lock:
            self.versions[name] = version
            self._todo.add(name)

    def remove_pipeline(self, name: str) -> None:
        with self._lock:
            self.versions.pop(name, None)
            self.ready.discard(name)

    # -- consuming responses (own thread) -------------------------------------------------
    def _assign_at_end(self, consumer: Consumer, topic: str, from_start: bool = False) -> None:
        """Read a topic from its current end: only answers to calls made from now on matter.
        Explicit offsets (not OFFSET_END) so no answer slips in before the position is set.
        A topic created again (broker restart) is read from its start instead: it holds only
        answers produced since, some perhaps to calls still waiting."""
        # asked through the admin client: the consumer's requests would wait behind its fetch
        spec = OffsetSpec.earliest() if from_start else OffsetSpec.latest()
        found = self.admin.list_offsets({TopicPartition(topic, p): spec
                                         for p in kafka.partitions_of(self.admin, topic)},
                                        request_timeout=10)
        consumer.incremental_assign([TopicPartition(p.topic, p.partition, f.result().offset)
                                     for p, f in found.items()])
        self._reading += list(found)

    def _read_errors(self, consumer: Consumer) -> bool:
        """Read the errors topic from its end, trying until it works (True) or the gateway
        stops (False); meanwhile the gateway is not ready (_kafka_fault says why)."""
        errors = self.cfg.errors()

        def attempt() -> None:
            try:
                kafka.ensure_topics(self.cfg, [errors])
                self._assign_at_end(consumer, errors)
            except Exception as e:
                self._kafka_fault = f"cannot read {errors} from Kafka yet: {e}"
                raise
            self._kafka_fault = None

        try:
            retry(attempt, Retry(f"reading {errors}", first=1, cap=1, quiet_tries=0,
                                 stop=self._stop.is_set))
            return True
        except GaveUp:  # stopping
            return False

    def _consume(self, loop: asyncio.AbstractEventLoop) -> None:
        consumer = Consumer({**self.cfg.consumer(None, offset_reset="latest"),
                             **KAFKA_REQUESTS.config("consumer")})
        assigned: set[str] = set()
        from_start = False  # after topics were created again, until all are read again
        errors = self.cfg.errors()

        def inputs() -> set[str]:
            with self._lock:
                return {self.cfg.pipeline_inputs(n) for n in self.versions}

        guard = TopicGuard(self.cfg, lambda: assigned | {errors}, inputs)
        self.admin, self._guard = guard.admin, guard
        # the partitions as assigned here: consumer.assignment() from the guard thread would
        # wait for the poll under way (StallWatch)
        guard.progress = watch = StallWatch(consumer, lambda: list(self._reading))
        pacer = Pacer(consumer, self.cfg.fetch_wait_ms)
        stalled: str | None = None
        try:
            if not self._read_errors(consumer):
                return   # stopped before Kafka answered
            guard.remember([errors])
            guard.start(self._stop)
            while not self._stop.is_set():
                if guard.lost.is_set():  # topics created again: read them from their start
                    guard.lost.clear()
                    consumer.unassign()
                    self._reading = []
                    assigned, from_start = set(), True
                    if not self._read_errors(consumer):
                        return
                    guard.remember([errors])
                    with self._lock:
                        self._todo |= set(self.versions)
                with self._lock:
                    todo, self._todo = self._todo, set()
                for name in todo:
                    topic = self.cfg.pipeline_outputs(name)
                    try:
                        if topic not in assigned:
                            kafka.ensure_topics(self.cfg, [self.cfg.pipeline_inputs(name), topic])
                            self._assign_at_end(consumer, topic, from_start)
                            guard.remember([topic])
                            assigned.add(topic)
                    except Exception as e:
                        log.warning("pipeline %s: cannot read %s yet: %s", name, topic, e)
                        with self._lock:
                            self._todo.add(name)
                        continue
                    with self._lock:
                        version = self.versions.get(name)
                        if version is not None:
                            self.ready.add(name)
                    if version is not None:
                        self.report(name, version, True, "")
                with self._lock:
                    from_start = from_start and bool(self._todo)
                if bool(guard.stall) != bool(stalled):  # the text changes (seconds)
                    stalled = guard.stall
                    self._stalled(stalled)
                batch = []
                if self._waiters:   # answers are awaited: no dozing (runtime.dataflow.pacing)
                    pacer.wake()
                # an answer ends the wait at once; the timeout bounds how soon a new
                # pipeline's outputs are read
                for m in next_batch(consumer, pacer.timeout(IDLE_WAIT_S), 1000):
                    batch.append((m.topic() == errors, key_of(m), headers_of(m), m.value()))
                pacer.read(len(batch))
                if batch:
                    loop.call_soon_threadsafe(self._resolve, batch)
                watch.sample()
        finally:
            consumer.close()

    def _stalled(self, why: str | None) -> None:
        """The broker stopped giving answers (`why`): pipelines are not Ready (PipelineFailed
        with the reason, and calls get a fast 503 instead of waiting for their timeout);
        None: it gives them again, so they are Ready again (through the next pass)."""
        with self._lock:
            versions = dict(self.versions)
            if why:
                self.ready.clear()
            else:
                self._todo |= set(versions)
        if why:
            log.error("answers stalled: %s", why)
            for name, version in versions.items():
                self.report(name, version, False, why)

    def _resolve(self, batch) -> None:
        for is_error, key, headers, value in batch:
            waiter = self._waiters.get(key)
            if waiter is None or waiter[0].done():
                continue
            fut, pipeline = waiter
            if headers.get(H_PIPELINE, pipeline) != pipeline:
                continue  # a chained pipeline's record under the same request id
            if is_error:
                doc = decode(value) or {}
                status = int(doc.get("status") or 500)
                fut.set_exception(InferError(status if 400 <= status < 600 else 500,
                                             doc.get("error") or "pipeline step failed"))
            else:
                fut.set_result(value)

    # -- inference ------------------------------------------------------------------------
    async def infer(self, pipeline: str, doc: dict, request_id: str,
                    timeout_s: float | None = None,
                    trace: Mapping[str, str] | None = None) -> tuple[bytes, int]:
        """The pipeline's answer (and version) to `doc`; `trace`: the caller's headers, whose
        trace context (if any) the pipeline's span continues."""
        span = tracing.start(f"pipeline {pipeline}", trace, SpanKind.SERVER, pipeline=pipeline,
                             request_id=request_id)
        error = None
        try:
            return await self._infer(pipeline, doc, request_id, timeout_s, span)
        except InferError as e:
            error = str(e)
            raise
        finally:
            tracing.end(span, error)

    async def _infer(self, pipeline: str, doc: dict, request_id: str, timeout_s: float | None,
                     span) -> tuple[bytes, int]:
        version = self.versions.get(pipeline)
        if version is None:
            raise InferError(404, f"pipeline {pipeline!r} not found")
        if pipeline not in self.ready:
            raise InferError(503, f"pipeline {pipeline!r} is not ready yet")
        if len(request_id) > MAX_REQUEST_ID:
            raise InferError(400, f"x-request-id: longer than {MAX_REQUEST_ID} characters")
        if request_id in self._waiters:
            raise InferError(409, f"request id {request_id!r} is already in flight")
        fut = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = (fut, pipeline)
        timeout = timeout_s or self.timeout_s
        deadline_ms = str(int((time.time() + timeout) * 1000))
        headers: list[tuple[str, str | bytes | None]] = [*tracing.with_carrier(
            [(H_PIPELINE, pipeline), (H_VERSION, str(version)), (H_DEADLINE, deadline_ms)],
            span)]
        try:
            self.producer.produce(self.cfg.pipeline_inputs(pipeline), key=request_id,
                                  value=encode({**doc, "id": request_id}), headers=headers)
            self.producer.poll(0)
            try:
                value = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise InferError(504, f"pipeline {pipeline!r}: no response within {timeout:g}s "
                                 f"(request id {request_id})") from None
        except BufferError:
            raise InferError(503, "too many requests in flight to Kafka") from None
        finally:
            self._waiters.pop(request_id, None)
        return value, version

    # -- REST -----------------------------------------------------------------------------
    async def _rest_infer(self, request: web.Request) -> web.Response:
        pipeline = request.match_info.get("pipeline")
        header = _pipeline_header(request.headers)
        if header.endswith(".pipeline"):
            pipeline = header.removesuffix(".pipeline")
        elif pipeline is None:
            return _json_error(404, "no pipeline named: use /v2/pipelines/{name}/infer or "
                               "header seldon-model: <name>.pipeline")
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        start = time.perf_counter()
        try:
            doc = parse_request(await self._body(request))
            timeout = _timeout_of(request.headers.get(TIMEOUT_HEADER))
            value, version = await self.infer(pipeline, doc, rid, timeout, request.headers)
        except InvalidInput as e:
            INFER_TOTAL.labels(pipeline, "rest", "400").inc()
            return _json_error(400, str(e), rid)
        except InferError as e:
            INFER_TOTAL.labels(pipeline, "rest", str(e.status)).inc()
            return _json_error(e.status, str(e), rid)
        INFER_TOTAL.labels(pipeline, "rest", "200").inc()
        INFER_SECONDS.labels(pipeline, "rest").observe(time.perf_counter() - start)
        return web.Response(body=value, content_type="application/json",
                            headers={"x-request-id": rid, "x-pipeline-version": str(version)})

    async def _body(self, request: web.Request) -> bytes:
        """The body, refused (413) beyond max_request_bytes: by its Content-Length before
        reading any of it, else (chunked) as soon as the limit is passed."""
        limit = self.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise InferError(413, f"body: {request.content_length} bytes is more than the "
                             f"limit of {limit} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise InferError(413, f"body: more than the limit of {limit} bytes") from None

    async def _rest_ready(self, request: web.Request) -> web.Response:
        name = request.match_info["pipeline"]
        if name not in self.versions:
            return _json_error(404, f"pipeline {name!r} not found")
        if name not in self.ready:
            return _json_error(503, f"pipeline {name!r} is not ready yet")
        return web.json_response({"name": name, "ready": True,
                                  "version": self.versions[name]})

    async def _health_ready(self, _request: web.Request) -> web.Response:
        """Ready while the gateway reads its answers from Kafka: not before (unreachable,
        or refusing its credentials), nor while its topic checks cannot reach the broker."""
        fault = self._kafka_fault
        if fault is None and self._guard is not None and self._guard.down.is_set():
            fault = "the Kafka broker is unreachable"
        if fault:
            return _json_error(503, f"pipeline gateway not ready: {fault}")
        return web.json_response({"ready": True})

    async def _metrics(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.headers["content-type"] = CONTENT_TYPE_LATEST
        return resp

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_bytes,
                               middlewares=[_oip_errors])
        ok = web.json_response
        app.add_routes([
            web.post("/v2/pipelines/{pipeline}/infer", self._rest_infer),
            web.post("/v2/models/{model}/infer", self._rest_infer),
            web.get("/v2/pipelines/{pipeline}/ready", self._rest_ready),
            web.get("/v2/health/live", lambda _r: _async(ok({"live": True}))),
            web.get("/v2/health/ready", self._health_ready),
            web.get("/metrics", self._metrics),
        ])
        return app

    async def run(self, stop: threading.Event) -> None:
        self._stop = stop
        loop = asyncio.get_running_loop()
        self.producer = Producer({**self.cfg.producer(), **KAFKA_REQUESTS.config("producer")})
        runner = web.AppRunner(self.app(), access_log=None)
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a taken port fails
            ("grpc.max_receive_message_length", self.max_request_bytes),
            ("grpc.max_send_message_length", 4 * self.max_request_bytes)])
        server.add_generic_rpc_handlers((GrpcService(self).handler(),))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(service.in_thread(lambda: self._consume(loop), "consumer", stop))
                # the producer's error callbacks; no deliveries
                group.create_task(service.poll_producer(self.producer, stop))
                await runner.setup()
                await web.TCPSite(runner, self.host, self.http_port).start()
                server.add_insecure_port(f"{self.host}:{self.grpc_port}")
                await server.start()
                log.info("pipeline gateway on http %s:%d grpc %s:%d", self.host,
                         self.http_port, self.host, self.grpc_port)
        finally:
            stop.set()
            await server.stop(1)
            await runner.cleanup()
            self.producer.flush(5)


_GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
               409: grpc.StatusCode.ALREADY_EXISTS, 503: grpc.StatusCode.UNAVAILABLE,
               504: grpc.StatusCode.DEADLINE_EXCEEDED}


class GrpcService(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gw: PipelineGateway):
        self.gw = gw

    async def ServerLive(self, request, context):
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return oip.ModelReadyResponse(ready=request.name.removesuffix(".pipeline")
                                      in self.gw.ready)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods; ModelInfer takes the request's bytes, so a message that does
        not decode is answered INVALID_ARGUMENT here (grpc's own decoding answers INTERNAL)."""
        def method(fn, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type and request_type.FromString,
                response_serializer=response_type.SerializeToString)
        return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
            "ServerLive": method(self.ServerLive, oip.ServerLiveRequest,
                                 oip.ServerLiveResponse),
            "ServerReady": method(self.ServerReady, oip.ServerReadyRequest,
                                  oip.ServerReadyResponse),
            "ModelReady": method(self.ModelReady, oip.ModelReadyRequest,
                                 oip.ModelReadyResponse),
            "ModelInfer": method(self.ModelInfer, None, oip.ModelInferResponse),
        })

    async def ModelInfer(self, raw: bytes, context):
        meta = {k: v for k, v in context.invocation_metadata() or ()}
        rid = str(meta.get("x-request-id") or uuid.uuid4().hex)
        try:
            request = oip.ModelInferRequest.FromString(raw)
        except (DecodeError, RecursionError, ValueError) as e:
            await context.send_initial_metadata((("x-request-id", rid),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"ModelInferRequest: the message does not decode ({e})")
        pipeline = (_pipeline_header(meta) or request.model_name).removesuffix(".pipeline")
        start = time.perf_counter()
        try:
            doc = check_request(_request_json(request))
            value, version = await self.gw.infer(pipeline, doc, rid,
                                                 _timeout_of(meta.get(TIMEOUT_HEADER)), meta)
        except (InferError, InvalidInput) as e:
            status = e.status if isinstance(e, InferError) else 400
            INFER_TOTAL.labels(pipeline, "grpc", str(status)).inc()
            code = _GRPC_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT if status < 500
                                   else grpc.StatusCode.INTERNAL)
            await context.send_initial_metadata((("x-request-id", rid),))
            await context.abort(code, str(e))
        await context.send_initial_metadata((("x-request-id", rid),
                                             ("x-pipeline-version", str(version))))
        INFER_TOTAL.labels(pipeline, "grpc", "200").inc()
        INFER_SECONDS.labels(pipeline, "grpc").observe(time.perf_counter() - start)
        try:
            return response_from_json(decode(value) or {}, raw=bool(request.raw_input_contents))
        except (TensorError, ValueError, TypeError, OverflowError) as e:
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"pipeline {pipeline!r}: its outputs do not convert to gRPC: {e}")


def _request_json(request: oip.ModelInferRequest) -> dict:
    """The request as OIP JSON; conversion errors (raw contents that do not divide into the
    datatype, unknown datatypes) become InvalidInput naming the tensor."""
    raw = len(request.raw_input_contents)
    if raw and raw != len(request.inputs):
        raise InvalidInput(f"raw_input_contents: {raw} entries for {len(request.inputs)} "
                           "inputs (one per input is required)")
    try:
        return request_to_json(request)
    except TensorError as e:
        raise InvalidInput(str(e)) from None
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidInput(f"inputs: raw contents do not match the tensors ({e})") from None


def _pipeline_header(headers) -> str:
    """The pipeline a request is for: Envoy names it in seldon-internal-model (so an experiment
    over pipelines reaches the chosen one); a direct caller uses seldon-model."""
    return headers.get("seldon-internal-model") or headers.get("seldon-model") or ""


def _timeout_of(value: str | None) -> float | None:
    """Seconds from the seldon-timeout-ms header (None: the gateway's default)."""
    if value is None or value == "":
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = float("nan")
    if not 0 < ms <= MAX_TIMEOUT_MS:  # also refuses nan and inf
        raise InferError(400, f"header {TIMEOUT_HEADER}: {value[:64]!r} is not a number of "
                         f"milliseconds between 1 and {MAX_TIMEOUT_MS}")
    return ms / 1000


def _json_error(status: int, message: str, request_id: str | None = None) -> web.Response:
    resp = web.json_response({"error": message}, status=status)
    if request_id:
        resp.headers["x-request-id"] = request_id
    return resp


@web.middleware
async def _oip_errors(request: web.Request, handler):
    """aiohttp's own refusals (unknown path, wrong method, oversized body) in the OIP error
    format instead of plain text."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json_error(e.status, e.reason or e.text or f"HTTP {e.status}")
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:
        log.exception("%s %s", request.method, request.path)
        return _json_error(500, f"pipeline gateway: internal error ({type(e).__name__})")


async def _async(value):
    return value


def main(argv: list[str] | None = None) -> None:
    s = load(PipelineGatewaySettings, "python -m runtime.dataflow.pipelinegateway", argv)
    service.run("pipeline-gateway", s, PipelineGateway(
        s.kafka_config(), s.timeout, s.max_request_bytes, s.host, s.http_port, s.grpc_port))


if __name__ == "__main__":
    main()
