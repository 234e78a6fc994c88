"""Model gateway: consumes the input topics of every model used by a pipeline, calls the model
over HTTP (through Envoy: `seldon-model` header), and produces the response to the model's
output topic, or an error naming the step to the errors topic. Records keep their headers, so
pipelines sharing a model are told apart. Steps with `batch` send their model one request
for several records (runtime.dataflow.batching).

    python -m runtime.dataflow.modelgateway --scheduler H:P --kafka-bootstrap H:P --envoy URL
"""

import asyncio
import logging
import os
import ssl
import sys
import threading
import time

import aiohttp
from confluent_kafka import Message, Producer
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from pydantic import Field

from runtime import tracing
from runtime.dataflow import service
from runtime.dataflow.batching import Batcher, merge, split
from runtime.dataflow.offsets import OffsetTracker, Token
from runtime.dataflow.reader import Reader
from runtime.dataflow.records import IDLE_WAIT_S, decode, encode, headers_of, key_of, position
from runtime.dataflow.validate import InvalidInput, check_request
from runtime.kafka import H_DEADLINE, H_ERROR, H_MODEL, H_PIPELINE, H_STEP, KafkaConfig
from runtime.retry import GaveUp, Retry, retry_async
from runtime.settings import load
from runtime.specs.pipeline import Batch, PipelineSpec

log = logging.getLogger("modelgateway")
MODEL_CALLS = Counter("seldon_modelgateway_calls_total", "model calls from pipelines",
                      ["model", "code"])
MODEL_SECONDS = Histogram("seldon_modelgateway_call_seconds", "model call latency", ["model"],
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30))
MODEL_RETRIES = Counter("seldon_modelgateway_retries_total",
                        "model calls retried after a transient failure", ["model", "code"])
GROUP = "seldon-modelgateway"
# Worth another try until the request's deadline: the model server is away or restarting
# (502: no connection, 503: Envoy has no healthy upstream, 404: the model is being (re)loaded)
# or too busy to answer in time (504: seen for a burst of calls on an overloaded machine).
TRANSIENT = frozenset({404, 429, 502, 503, 504})
# Stock MLServer answers 400 "Model <name> is not ready yet." while a model is being loaded
# again: transient too, unlike other 400s (core2's name hook makes it a 503 already)
NOT_READY = "is not ready yet"
MAX_IN_FLIGHT = 20_000  # records taken but not finished: stop fetching beyond this
# A pooled keep-alive connection closed by the server under a new request (not a refused
# connect, a ClientConnectorError): the request is sent again at once on a fresh connection.
STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
Answer = tuple[int, bytes | str]   # (HTTP status, the body, or the reason it failed)


class ModelGatewaySettings(service.MetricsSettings):
    envoy: str = Field(description="base URL models are called on")
    envoy_ca: str = Field("", description=(
        "CA file to verify an https Envoy with (default: env CORE2_ENVOY_TLS_CA, else the "
        "system's trust store)"))
    model_timeout: float = Field(30, description="seconds per model call")
    retry_seconds: float = Field(120, description=(
        "how long a model call failing for a transient reason (no connection, 503, 404 "
        "while the model loads) is retried, at most; a request through the pipeline gateway "
        "is retried until its own deadline"))

    def envoy_ca_file(self) -> str | None:
        return self.envoy_ca or os.environ.get("CORE2_ENVOY_TLS_CA") or None


class _Transient(Exception):
    """A model answer worth another try (TRANSIENT)."""


class ModelGateway(service.Role):
    component = "modelgateway"

    def __init__(self, cfg: KafkaConfig, envoy: str, timeout_s: float = 30,
                 concurrency: int = 256, group: str = GROUP, envoy_ca: str | None = None,
                 retry_s: float = 120):
        self.cfg, self.envoy = cfg, envoy.rstrip("/")
        # https Envoy: verify it with this CA file (else the system's trust store)
        self.ssl = ssl.create_default_context(cafile=envoy_ca) if envoy_ca else None
        self.timeout_s, self.group = timeout_s, group
        self.retry_s = retry_s  # retry budget of a record that carries no deadline
        self._lock = threading.Lock()
        self._pipelines: dict[str, tuple[int, set[str]]] = {}
        self._batching: dict[tuple[str, str], Batch] = {}  # (pipeline, step) -> batch spec
        self._batcher = Batcher(self._flush)
        self._dirty = threading.Event()
        self._unready: set[str] = set()
        # made by run (the consuming thread makes the reader)
        self.reader: Reader
        self.tracker: OffsetTracker
        self.producer: Producer
        self.session: aiohttp.ClientSession
        self._calls = service.Tasks()   # the model calls under way
        self._sem = asyncio.Semaphore(concurrency)
        self._closing = False

    # -- control --------------------------------------------------------------------------
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None:
        with self._lock:
            self._pipelines[name] = (version, {s.name for s in spec.steps})
            self._batching = {k: b for k, b in self._batching.items() if k[0] != name}
            self._batching.update({(name, s.name): s.batch for s in spec.steps if s.batch})
            self._unready.add(name)
        self._dirty.set()

    def remove_pipeline(self, name: str) -> None:
        with self._lock:
            self._pipelines.pop(name, None)
            self._batching = {k: b for k, b in self._batching.items() if k[0] != name}
            self._unready.discard(name)
        self._dirty.set()

    def _topics_of(self, models: set[str]) -> set[str]:
        return {self.cfg.model_inputs(m) for m in models}

    # -- consuming (its own thread) -------------------------------------------------------
    def consume(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Read the model input topics and hand the records to the event loop (_dispatch)."""
        self.reader = reader = Reader(self.cfg, self.group, self._written, stop)
        self.tracker = reader.tracker
        try:
            while not stop.is_set():
                reader.reread_if_lost()
                if self._dirty.is_set():
                    self._dirty.clear()
                    with self._lock:
                        models = set().union(*(m for _, m in self._pipelines.values()))
                    wanted = sorted(self._topics_of(models))
                    produced = [self.cfg.model_outputs(m) for m in models] + [self.cfg.errors()]
                    if not ((not wanted or reader.ensure(wanted + produced))
                            and reader.read(wanted)):
                        self._dirty.set()
                        continue
                if self.tracker.in_flight() > MAX_IN_FLIGHT:
                    stop.wait(0.05)
                    continue
                msgs = [(m, self.tracker.begin(*position(m)))
                        for m in reader.fetch(IDLE_WAIT_S)]  # a record ends the wait
                if msgs:
                    loop.call_soon_threadsafe(self._dispatch, msgs)
                reader.end_pass()
                self._report_ready(reader.guard.stall)
        finally:
            reader.close()

    def _written(self) -> set[str]:
        with self._lock:
            models = set().union(*(m for _, m in self._pipelines.values()))
        return {self.cfg.model_outputs(m) for m in models} | {self.cfg.errors()}

    def _report_ready(self, stall: str | None) -> None:
        """Ready once a pipeline's model topics are read; not Ready (PipelineFailed, with
        the reason) while the broker stopped giving records, and Ready again after."""
        if stall:
            with self._lock:
                stalled = [(n, v) for n, (v, _) in self._pipelines.items()
                           if n not in self._unready]
                self._unready |= {n for n, _ in stalled}
            for name, version in stalled:
                log.error("pipeline %s v%d: %s", name, version, stall)
                self.report(name, version, False, stall)
            return
        with self._lock:
            done = [(n, self._pipelines[n][0]) for n in self._unready
                    if self._topics_of(self._pipelines[n][1]) <= self.reader.sub.assigned]
            self._unready -= {n for n, _ in done}
        for name, version in done:
            self.report(name, version, True, "")

    # -- calling models (event loop) ------------------------------------------------------
    def _dispatch(self, msgs: list[tuple[Message, Token]]) -> None:
        for m, token in msgs:
            parsed = self.cfg.parse_topic(position(m)[0])
            if parsed is None:
                self.tracker.release(token)
                continue
            model, headers = parsed[1], headers_of(m)
            step = headers.get(H_STEP, model)
            try:
                check_request(decode(m.value()))
            except InvalidInput as e:
                self._error(token, key_of(m), list(headers.items()), step, model, 400,
                            f"invalid request record: {e}")
                self.tracker.release(token)
                continue
            batch = self._batching.get((headers.get(H_PIPELINE, ""), step))
            if batch:
                self._batcher.add((headers.get(H_PIPELINE, ""), step, model), (m, token),
                                  batch.size, batch.windowMs)
            else:
                self._calls.spawn(self._infer(m, token, model, step, headers))
        self._batcher.end_of_fetch()

    def _flush(self, group: tuple, items: list) -> None:
        _, step, model = group
        if len(items) == 1:
            m, token = items[0]
            self._calls.spawn(self._infer(m, token, model, step, headers_of(m)))
        else:
            self._calls.spawn(self._infer_batch(items, model, step))

    def _deadline(self, headers: dict) -> float:
        """The monotonic time until which a failed call may be retried: the caller's deadline
        when the record carries one, else retry_s from now."""
        try:
            left = float(headers[H_DEADLINE]) / 1000 - time.time()
        except (KeyError, ValueError):
            left = self.retry_s
        return time.monotonic() + min(left, self.retry_s)

    async def _call_retrying(self, model: str, key: str, value: bytes, deadline: float,
                             trace: dict[str, str] | None = None) -> Answer:
        """_call, again with backoff while it fails for a transient reason and the deadline
        allows; the last answer otherwise."""
        answer: Answer = (0, "")

        async def attempt() -> Answer:
            nonlocal answer
            if answer[0]:  # trying again after a transient answer
                MODEL_RETRIES.labels(model, str(answer[0])).inc()
            answer = status, body = await self._call(model, key, value, trace)
            if isinstance(body, str) and (status in TRANSIENT or
                                          (status == 400 and NOT_READY in body)):
                raise _Transient(body)
            return answer

        try:
            return await retry_async(attempt, Retry(
                f"model {model}", retry_on=(_Transient,), timeout=deadline - time.monotonic(),
                first=0.05, cap=1.0, stop=lambda: self._closing,
                quiet_tries=sys.maxsize))  # counted in MODEL_RETRIES, not logged per try
        except GaveUp:
            return answer

    async def _call(self, model: str, key: str, value: bytes,
                    trace: dict[str, str] | None = None) -> Answer:
        """(HTTP status, body) of one model call, or (502|504, reason) if it failed."""
        start = time.perf_counter()
        try:
            async with self._sem:
                try:
                    status, body = await self._post(model, key, value, trace)
                except STALE_CONNECTION as e:
                    if isinstance(e, aiohttp.ClientConnectorError):
                        raise
                    # a kept-alive connection the server had closed: at once on a new one
                    MODEL_RETRIES.labels(model, "reset").inc()
                    status, body = await self._post(model, key, value, trace)
        except (TimeoutError, aiohttp.ClientError) as e:
            timed_out = isinstance(e, TimeoutError)
            MODEL_CALLS.labels(model, "504" if timed_out else "502").inc()
            reason = f"no answer within {self.timeout_s:g}s" if timed_out else str(e) or repr(e)
            return (504 if timed_out else 502), f"calling the model failed: {reason}"
        MODEL_CALLS.labels(model, str(status)).inc()
        MODEL_SECONDS.labels(model).observe(time.perf_counter() - start)
        if 200 <= status < 300:
            return status, body
        detail = body.decode(errors="replace")[:2000]
        doc = decode(body) or {}
        if isinstance(found := doc.get("error") or doc.get("detail"), str):
            detail = found
        return status, f"HTTP {status}: {detail}"

    async def _post(self, model: str, key: str, value: bytes,
                    trace: dict[str, str] | None) -> tuple[int, bytes]:
        async with self.session.post(
                f"{self.envoy}/v2/models/{model}/infer", data=value,
                headers={"seldon-model": model, "content-type": "application/json",
                         "x-request-id": key, **(trace or {})}) as r:
            return r.status, await r.read()

    async def _infer(self, msg, token: Token, model: str, step: str, headers: dict) -> None:
        key = key_of(msg)
        span = tracing.start(f"model {model}", headers, SpanKind.CLIENT, model=model, step=step,
                             pipeline=headers.get(H_PIPELINE, ""))
        out_headers = tracing.with_carrier(list(headers.items()), span)
        status = 500
        try:
            status, body = await self._call_retrying(model, key, msg.value(),
                                                     self._deadline(headers),
                                                     tracing.carrier(span))
            if isinstance(body, bytes):
                self.tracker.produce(self.producer, token, self.cfg.model_outputs(model),
                                     key=key, value=body, headers=out_headers)
            else:
                self._error(token, key, out_headers, step, model, status, body)
        except Exception as e:
            if self._closing:  # the session closed under the call: replayed after a restart
                return
            log.exception("request %s to model %s", key, model)
            self._error(token, key, out_headers, step, model, 500,
                        f"the model gateway failed: {e!r}")
        finally:
            tracing.end(span, None if status < 400 else f"HTTP {status}")
            if not self._closing:  # unreleased, its offset is not committed
                self.tracker.release(token)
        self.producer.poll(0)

    async def _infer_batch(self, items: list, model: str, step: str) -> None:
        """One call for all records: outputs split back per record; any failure to each."""
        msgs = [m for m, _ in items]
        docs = [d for m in msgs if (d := decode(m.value()))]
        merged = merge(docs) if len(docs) == len(msgs) else None
        if merged is None:  # not batchable together: one by one
            for m, token in items:
                self._calls.spawn(self._infer(m, token, model, step, headers_of(m)))
            return
        request, sizes = merged
        keys = [key_of(m) for m in msgs]
        deadline = min(self._deadline(headers_of(m)) for m in msgs)
        produced: set[int] = set()
        try:
            status, body = await self._call_retrying(
                model, keys[0], encode({"id": keys[0], **request}), deadline)
            parts, reason = None, body if isinstance(body, str) else ""
            if isinstance(body, bytes):
                doc = decode(body) or {}
                parts = split(doc, sizes)
                if parts is None:
                    status, reason = 502, (f"the batched response of {len(msgs)} requests "
                                           "does not split along the first dimension")
            for i, (m, token) in enumerate(items):
                out_headers = list(headers_of(m).items())
                if parts is None:
                    self._error(token, keys[i], out_headers, step, model, status,
                                f"{reason} (batch of {len(msgs)})")
                else:
                    value = encode({**doc, "id": keys[i], "outputs": parts[i]})
                    self.tracker.produce(self.producer, token, self.cfg.model_outputs(model),
                                         key=keys[i], value=value, headers=out_headers)
                produced.add(i)
        except Exception as e:
            if self._closing:  # the session closed under the call: replayed after a restart
                return
            log.exception("batch of %d requests to model %s", len(msgs), model)
            for i, (m, token) in enumerate(items):
                if i not in produced:
                    self._error(token, keys[i], list(headers_of(m).items()), step, model, 500,
                                f"the model gateway failed: {e!r} (batch of {len(msgs)})")
        finally:
            for _, token in items:
                if not self._closing:
                    self.tracker.release(token)
        self.producer.poll(0)

    def _error(self, token, key, headers, step, model, status, reason) -> None:
        pipeline = dict(headers).get(H_PIPELINE, "")
        msg = f"step {step} (model {model}): {reason}"
        log.info("pipeline %s request %s: %s", pipeline, key, msg)
        self.tracker.produce(
            self.producer, token, self.cfg.errors(), key=key,
            value=encode({"error": msg, "status": status, "step": step, "model": model,
                          "pipeline": pipeline}),
            headers=[*headers, (H_ERROR, msg), (H_MODEL, model), ("status", str(status))])

    async def run(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self.producer = Producer(self.cfg.producer())
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=128, keepalive_timeout=60,
                                           ssl=self.ssl or True))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(service.in_thread(lambda: self.consume(loop, stop),
                                                    "consumer", stop))
                # deliveries after the last call's own poll
                group.create_task(service.poll_producer(self.producer, stop))
        finally:
            stop.set()
            # the consumer has left, so calls still under way are cancelled: unfinished,
            # their records' offsets were not committed and are read again after a restart
            self._closing = True
            await self._calls.close()
            await self.session.close()
            self.producer.flush(5)


def main(argv: list[str] | None = None) -> None:
    s = load(ModelGatewaySettings, "python -m runtime.dataflow.modelgateway", argv)
    service.run("model-gateway", s, ModelGateway(
        s.kafka_config(), s.envoy, s.model_timeout, envoy_ca=s.envoy_ca_file(),
        retry_s=s.retry_seconds))


if __name__ == "__main__":
    main()
