"""The model gateway: calls a pipeline step's model over HTTP through Envoy (`seldon-model`
header), retrying transient failures until the request's deadline, and batches the calls of
steps with `batch` (runtime.dataflow.batching). It runs inside the engine's process: the
engine hands it each step's request and is given the answer back, so a step costs one HTTP
call and no Kafka round trip (the engine still writes the model's topics for `inspect`).
"""

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from runtime import tracing
from runtime.dataflow.batching import Batcher, merge, split
from runtime.dataflow.httpclient import HttpClient, HttpError, StaleConnection
from runtime.dataflow.records import decode, encode
from runtime.dataflow.service import Tasks
from runtime.kafka import H_DEADLINE
from runtime.retry import GaveUp, Retry, retry_async
from runtime.specs.pipeline import Batch

log = logging.getLogger("modelgateway")
MODEL_CALLS = Counter("seldon_modelgateway_calls_total", "model calls from pipelines",
                      ["model", "code"])
MODEL_SECONDS = Histogram("seldon_modelgateway_call_seconds", "model call latency", ["model"],
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30))
MODEL_RETRIES = Counter("seldon_modelgateway_retries_total",
                        "model calls retried after a transient failure", ["model", "code"])
# Worth another try until the request's deadline: the model server is away or restarting
# (502: no connection, 503: Envoy has no healthy upstream, 404: the model is being (re)loaded)
# or too busy to answer in time (504: seen for a burst of calls on an overloaded machine).
TRANSIENT = frozenset({404, 429, 502, 503, 504})
# Stock MLServer answers 400 "Model <name> is not ready yet." while a model is being loaded
# again: transient too, unlike other 400s (core2's name hook makes it a 503 already)
NOT_READY = "is not ready yet"
Answer = tuple[int, bytes | str]   # (HTTP status, the body, or the reason it failed)


@dataclass
class StepCall:
    """One step's request: `value` is its OIP request body, `headers` the record headers it
    travels with (pipeline, step, deadline, trace context), `hold` what the engine keeps
    uncommitted until the answer is handled."""

    pipeline: str
    step: str
    model: str
    key: str
    value: bytes
    headers: list[tuple[str, str]]
    hold: list = field(default_factory=list)


# (call, status, body or the reason it failed, headers for the answer's records)
OnAnswer = Callable[[StepCall, int, bytes | str, list[tuple[str, str]]], None]


class _Transient(Exception):
    """A model answer worth another try (TRANSIENT)."""


class ModelGateway:
    def __init__(self, envoy: str, on_answer: OnAnswer, timeout_s: float = 30,
                 concurrency: int = 256, envoy_ca: str | None = None, retry_s: float = 120):
        self.envoy, self.on_answer = envoy.rstrip("/"), on_answer
        # https Envoy: verify it with this CA file (else the system's trust store)
        self.ssl = ssl.create_default_context(cafile=envoy_ca) if envoy_ca else None
        self.timeout_s = timeout_s
        self.retry_s = retry_s  # retry budget of a request that carries no deadline
        self._batcher = Batcher(self._flush)
        self._calls = Tasks()   # the model calls under way
        self._sem = asyncio.Semaphore(concurrency)
        self.closing = False
        self.client: HttpClient   # made by open(), on the event loop

    def open(self) -> None:
        self.client = HttpClient(self.envoy, limit=128, ssl_context=self.ssl)

    async def close(self) -> None:
        """Calls still under way are cancelled and their answers never given: the engine's
        records for them stay uncommitted and are read again after a restart."""
        self.closing = True
        await self._calls.close()
        await self.client.close()

    # -- taking calls (event loop) ---------------------------------------------------------
    def submit(self, call: StepCall, batch: Batch | None) -> None:
        if batch:
            self._batcher.add((call.pipeline, call.step, call.model), call, batch.size,
                              batch.windowMs)
        else:
            self._calls.spawn(self._infer(call))

    def end_of_fetch(self) -> None:
        """The calls handed over together are all in: a batch with no window goes now."""
        self._batcher.end_of_fetch()

    def _flush(self, _group: tuple, calls: list[StepCall]) -> None:
        if len(calls) == 1:
            self._calls.spawn(self._infer(calls[0]))
        else:
            self._calls.spawn(self._infer_batch(calls))

    def _deadline(self, headers: list[tuple[str, str]]) -> float:
        """The monotonic time until which a failed call may be retried: the caller's deadline
        when the request carries one, else retry_s from now."""
        try:
            left = float(dict(headers)[H_DEADLINE]) / 1000 - time.time()
        except (KeyError, ValueError):
            left = self.retry_s
        return time.monotonic() + min(left, self.retry_s)

    # -- calling ---------------------------------------------------------------------------
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
                first=0.05, cap=1.0, stop=lambda: self.closing,
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
                except StaleConnection:
                    # a kept-alive connection the server had closed: at once on a new one
                    MODEL_RETRIES.labels(model, "reset").inc()
                    status, body = await self._post(model, key, value, trace)
        except (TimeoutError, HttpError) as e:
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
        async with asyncio.timeout(self.timeout_s):
            return await self.client.post(
                f"/v2/models/{quote(model, safe='')}/infer", value,
                {"seldon-model": model, "content-type": "application/json", "x-request-id": key,
                 **(trace or {})})

    def _answer(self, call: StepCall, status: int, body: bytes | str,
                headers: list[tuple[str, str]]) -> None:
        if self.closing:  # the session closed under the call: replayed after a restart
            return
        try:
            self.on_answer(call, status, body, headers)
        except Exception:
            log.exception("pipeline %s request %s: handling the answer of model %s",
                          call.pipeline, call.key, call.model)

    async def _infer(self, call: StepCall) -> None:
        span = tracing.start(f"model {call.model}", dict(call.headers), SpanKind.CLIENT,
                             model=call.model, step=call.step, pipeline=call.pipeline)
        out_headers = tracing.with_carrier(list(call.headers), span)
        status: int = 500
        body: bytes | str
        try:
            status, body = await self._call_retrying(call.model, call.key, call.value,
                                                     self._deadline(call.headers),
                                                     tracing.carrier(span))
        except Exception as e:
            if self.closing:
                return
            log.exception("request %s to model %s", call.key, call.model)
            body = f"the model gateway failed: {e!r}"
        finally:
            tracing.end(span, None if status < 400 else f"HTTP {status}")
        self._answer(call, status, body, out_headers)

    async def _infer_batch(self, calls: list[StepCall]) -> None:
        """One call for all requests: outputs split back per request; a failure to each."""
        docs = [d for c in calls if (d := decode(c.value))]
        merged = merge(docs) if len(docs) == len(calls) else None
        if merged is None:  # not batchable together: one by one
            for c in calls:
                self._calls.spawn(self._infer(c))
            return
        request, sizes = merged
        first = calls[0]
        deadline = min(self._deadline(c.headers) for c in calls)
        answers: list[bytes | str]
        try:
            status, body = await self._call_retrying(
                first.model, first.key, encode({"id": first.key, **request}), deadline)
            if isinstance(body, str):
                answers = [body] * len(calls)
            elif (parts := split(doc := decode(body) or {}, sizes)) is None:
                status = 502
                answers = [f"the batched response of {len(calls)} requests does not split "
                           "along the first dimension"] * len(calls)
            else:
                answers = [encode({**doc, "id": c.key, "outputs": part})
                           for c, part in zip(calls, parts, strict=True)]
        except Exception as e:   # each request still gets an answer: its error
            if self.closing:
                return
            log.exception("batch of %d requests to model %s", len(calls), first.model)
            status, answers = 500, [f"the model gateway failed: {e!r}"] * len(calls)
        for c, answer in zip(calls, answers, strict=True):
            if isinstance(answer, str):
                answer = f"{answer} (batch of {len(calls)})"
            self._answer(c, status, answer, c.headers)
