"""The scheduler's feedback service for adaptive experiments. In: Envoy's access log (gRPC
AccessLogService on the xDS port: who served each logged request), and feedback routed by
Envoy, REST (POST /v2/models/{m}/feedback, /v2/pipelines/{p}/feedback) and gRPC
(core2.feedback.Feedback/Send). Out: each accepted feedback on the feedback topic, so it can
be inspected and replayed. The learning itself is runtime.scheduler.adaptive."""

import asyncio
import json
import logging

import grpc
from aiohttp import web
from confluent_kafka import Producer
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client import Counter
from pydantic import Field, model_validator

from runtime.envoy import EXPERIMENT_HEADER, MODEL_HEADER, ROUTE_HEADER
from runtime.kafka import KafkaConfig, ensure_topics
from runtime.pb import feedback_pb2, feedback_pb2_grpc
from runtime.retry import Retry, retry_async
from runtime.scheduler.adaptive import Adaptive, FeedbackError
from runtime.specs.common import Spec, SpecError

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
              409: grpc.StatusCode.ALREADY_EXISTS}


LOG_MESSAGES = Counter("seldon_experiment_access_log_messages", "Batches of Envoy's access "
                       "log of adaptive experiments received")
LOG_ENTRIES = Counter("seldon_experiment_access_log_entries", "Entries of Envoy's access log "
                      "of adaptive experiments received")


class AccessLog(als_pb2_grpc.AccessLogServiceServicer):
    """Envoy streams its log entries of adaptive experiments' requests here, batched."""

    def __init__(self, adaptive: Adaptive):
        self.adaptive = adaptive

    async def StreamAccessLogs(self, request_iterator, context):
        async for message in request_iterator:
            LOG_MESSAGES.inc()
            LOG_ENTRIES.inc(len(message.http_logs.log_entry))
            for entry in message.http_logs.log_entry:
                self.adaptive.served_by(entry.request.request_headers.get(EXPERIMENT_HEADER, ""),
                                        entry.response.response_headers.get(ROUTE_HEADER, ""),
                                        entry.request.request_id)
        return als_pb2.StreamAccessLogsResponse()


class FeedbackBody(Spec):
    """A REST feedback body: `{"request_id": ..., "reward": 0.8}` or `{..., "label": ...}`."""

    request_id: str = Field(min_length=1, max_length=256,
                            description="the x-request-id of the answer being rated")
    reward: float | None = Field(default=None, ge=0, le=1, strict=True)
    label: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one(self):
        if (self.reward is None) == (self.label is None):
            raise ValueError("give exactly one of reward (a number 0..1) or label")
        return self


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _oip_errors(request: web.Request, handler):
    """aiohttp's own answers (404, 405, 413) in the OIP `{"error": ...}` shape too."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        return _error(e.status, e.reason or e.text or "error")


async def _rest_feedback(request: web.Request) -> web.Response:
    kind, name = request.match_info["kind"], request.match_info["name"]
    called = request.headers.get(MODEL_HEADER) or (
        f"{name}.pipeline" if kind == "pipelines" else name)
    try:
        raw = json.loads(await request.read())
    except ValueError as e:
        return _error(400, f"body: not JSON ({e})")
    try:
        body = FeedbackBody.parse(raw, "body")
        record = await request.app["adaptive"].feedback(called, body.request_id, body.reward,
                                                        body.label)
    except SpecError as e:
        return _error(400, str(e))
    except FeedbackError as e:
        return _error(e.status, str(e))
    return web.json_response(record)


def rest_app(adaptive: Adaptive) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_oip_errors])
    app["adaptive"] = adaptive
    app.router.add_post("/v2/{kind:models|pipelines}/{name}/feedback", _rest_feedback)
    return app


class FeedbackService(feedback_pb2_grpc.FeedbackServicer):
    def __init__(self, adaptive: Adaptive):
        self.adaptive = adaptive

    async def Send(self, request, context):
        called = dict(context.invocation_metadata() or ()).get(MODEL_HEADER, "")
        which = request.WhichOneof("value")
        problem = ("seldon-model: header required (the model, <p>.pipeline or <e>.experiment "
                   "that answered)" if not called else
                   "request_id: required (the x-request-id of the answer being rated)"
                   if not request.request_id else
                   "reward or label: give one" if which is None else
                   "reward: must be a number between 0 and 1"
                   if which == "reward" and not 0 <= request.reward <= 1 else "")
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            record = await self.adaptive.feedback(
                called, request.request_id, request.reward if which == "reward" else None,
                request.label if which == "label" else None)
        except FeedbackError as e:
            await context.abort(GRPC_CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT),
                                str(e))
        return feedback_pb2.FeedbackResponse(experiment=record["experiment"],
                                             candidate=record["candidate"],
                                             reward=record["reward"])


class FeedbackTopic:
    """Produces accepted feedback (JSON, keyed by experiment) to `<prefix>.<ns>.feedback`.
    The broker may start after the scheduler (local mode) or be away for a while: records
    wait in a bounded queue, and the topic is created once it can be."""

    def __init__(self, cfg: KafkaConfig, limit: int = 100_000):
        self.cfg, self.topic = cfg, cfg.feedback()
        self.queue: asyncio.Queue[dict] = asyncio.Queue(limit)
        self.producer = Producer({**cfg.producer(), "acks": "all"})

    def publish(self, record: dict) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            log.warning("feedback topic: queue full, record for %s not published",
                        record["requestId"])

    async def run(self) -> None:
        # until the broker is there (no deadline: records wait in the queue meanwhile)
        await retry_async(lambda: asyncio.to_thread(ensure_topics, self.cfg, [self.topic]),
                          Retry(what=f"create feedback topic {self.topic}", first=2, cap=2,
                                quiet_tries=5))
        while True:
            record = await self.queue.get()
            self.producer.produce(self.topic, key=record["experiment"].encode(),
                                  value=json.dumps(record).encode())
            self.producer.poll(0)
