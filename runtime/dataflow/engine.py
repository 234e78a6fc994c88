"""Dataflow engine service: consumes pipeline input topics (and the outputs of pipelines that
others build on), joins and routes per the pipeline specs (runtime.dataflow.flow), calls each
step's model itself through its in-process model gateway (runtime.dataflow.modelgateway), and
produces pipeline outputs. A step costs one HTTP call, no Kafka round trip; its request and
answer are still written to the model's input and output topics, for `core2 pipeline inspect`
and for whoever reads them. One consumer group, so a restarted engine resumes where it
stopped: an input's offset is committed only once everything it led to was produced.

A consumer thread fetches; records, model answers and join windows are handled on the event
loop, one at a time, so the flow needs no locking beyond pipeline changes.

    python -m runtime.dataflow.engine --scheduler H:P --kafka-bootstrap H:P --envoy URL
"""

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping

from confluent_kafka import Message, Producer
from prometheus_client import Counter
from pydantic import Field

from runtime import tracing
from runtime.dataflow import service
from runtime.dataflow.flow import INPUT, OUTPUT, STEP, Dataflow, Emit
from runtime.dataflow.kafkastats import KAFKA_REQUESTS
from runtime.dataflow.modelgateway import ModelGateway, StepCall
from runtime.dataflow.offsets import Token
from runtime.dataflow.plan import Plan, build_plan
from runtime.dataflow.reader import Reader
from runtime.dataflow.records import IDLE_WAIT_S, decode, encode, headers_of, key_of, position
from runtime.dataflow.refs import RefError
from runtime.dataflow.validate import InvalidInput, check_tensors
from runtime.kafka import (
    H_DEADLINE,
    H_ERROR,
    H_MODEL,
    H_PIPELINE,
    H_STEP,
    H_VERSION,
    RECORD_LINGER_MS,
    KafkaConfig,
)
from runtime.settings import load
from runtime.specs.pipeline import Batch, PipelineSpec

log = logging.getLogger("engine")
GROUP = "seldon-dataflow-engine"
RECORDS = Counter("seldon_dataflow_engine_records_total", "records consumed", ["kind"])
EMITS = Counter("seldon_dataflow_engine_emits_total", "records produced", ["kind"])
REFUSED = Counter("seldon_dataflow_engine_refused_total",
                  "records that could not be processed (sent to the errors topic)", ["kind"])
MAX_IN_FLIGHT = 20_000  # records taken but not finished: stop fetching beyond this
Source = tuple[str, str | None, str]
Hold = list[Token]   # the records a piece of data is on behalf of (uncommitted until done)


class BadRecord(Exception):
    """A record the engine cannot use: reported on the errors topic, never raised further."""

    def __init__(self, pipeline: str, step: str, status: int, reason: str):
        super().__init__(reason)
        self.pipeline, self.step, self.status = pipeline, step, status


class EngineSettings(service.MetricsSettings):
    """The engine's flags: --scheduler, --metrics-*, --kafka-*, and how models are called."""

    envoy: str = Field(description="base URL step models are called on (Envoy)")
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


def _tensors_of(value: bytes | None, field: str, strict: bool = False) -> list[dict]:
    """The checked tensors under `field` of a JSON record (a pipeline's input or output, a
    model's answer); InvalidInput with the reason otherwise."""
    doc = decode(value)
    if doc is None:
        raise InvalidInput("the record is not a JSON object")
    return check_tensors(doc.get(field, []), field, strict=strict)


def _tokens(held: list) -> Hold:
    """The tokens of the holds a join gave back (each a Hold)."""
    return [t for hold in held for t in hold]


class Engine(service.Role):
    component = "engine"

    def __init__(self, cfg: KafkaConfig, envoy: str, group: str = GROUP,
                 model_timeout_s: float = 30, envoy_ca: str | None = None,
                 retry_s: float = 120):
        self.cfg, self.group = cfg, group
        self.flow = Dataflow()
        self.models = ModelGateway(envoy, self._on_answer, model_timeout_s, envoy_ca=envoy_ca,
                                   retry_s=retry_s)
        self._ops: queue.Queue = queue.Queue()
        self._unready: dict[str, Plan] = {}
        # pipeline changes (consumer thread) against records and answers (event loop)
        self._lock = threading.Lock()
        self._batching: dict[str, dict[str, Batch]] = {}  # pipeline -> step -> batch spec
        self._expiry: asyncio.TimerHandle | None = None
        self.reader: Reader   # made by the consuming thread (consume)
        self.producer: Producer   # made by run: what the next hop waits for
        self.records: Producer    # made by run: the model topics' records (RECORD_LINGER_MS)

    # -- control (any thread) -------------------------------------------------------------
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None:
        self._ops.put(("set", name, version, spec))

    def remove_pipeline(self, name: str) -> None:
        self._ops.put(("remove", name))

    # -- topics ---------------------------------------------------------------------------
    def _source_topic(self, source: Source) -> str | None:
        pipeline, step, direction = source
        if step is None:
            return (self.cfg.pipeline_inputs(pipeline) if direction == "inputs"
                    else self.cfg.pipeline_outputs(pipeline))
        return None   # a step's inputs and outputs are served in-process (_call, _on_answer)

    def _plan_topics(self, plan: Plan) -> set[str]:
        consumed = {t for s in plan.sources() if (t := self._source_topic(s))}
        consumed.add(self.cfg.pipeline_inputs(plan.name))
        return consumed

    def _produced_topics(self, plan: Plan) -> set[str]:
        models = {t for m in plan.models
                  for t in (self.cfg.model_inputs(m), self.cfg.model_outputs(m))}
        return models | {self.cfg.pipeline_outputs(plan.name), self.cfg.errors()}

    def _written_topics(self) -> set[str]:
        with self._lock:
            plans = list(self.flow.plans.values())
        return {self.cfg.errors()}.union(*(self._produced_topics(p) for p in plans))

    def _unready_all(self, why: str, reason: str = "") -> None:
        """Pipelines are not Ready while their topics are gone, the broker is away (the
        scheduler shows PipelineCreating) or it stopped giving records (`reason`: shown as
        PipelineFailed); _report_ready says Ready again once that is over."""
        with self._lock:
            plans = list(self.flow.plans.items())
        for name, plan in plans:
            if name not in self._unready:
                log.warning("pipeline %s v%d not ready: %s", name, plan.version, why)
                self._unready[name] = plan
                self.report(name, plan.version, False, reason)

    def _apply_ops(self) -> None:
        changed = False
        while True:
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                break
            changed = True
            if op[0] == "retry":
                continue
            if op[0] == "remove":
                with self._lock:
                    self.flow.remove(op[1])
                    self._batching.pop(op[1], None)
                self._unready.pop(op[1], None)
                continue
            _, name, version, spec = op
            current = self.flow.plans.get(name)
            if current and current.version == version:
                self._unready[name] = current  # re-announce (scheduler reconnected)
                continue
            try:
                plan = build_plan(name, version, spec)
            except RefError as e:
                self.report(name, version, False, f"engine: {e}")
                continue
            if not self.reader.ensure(sorted(self._plan_topics(plan)
                                             | self._produced_topics(plan)),
                                      f"pipeline {name}"):
                self._ops.put(op)
                break
            with self._lock:
                self.flow.set_plan(plan)
                self._batching[name] = {s.name: s.batch for s in spec.steps if s.batch}
            self._unready[name] = plan
        if changed:
            with self._lock:
                wanted = sorted({self.cfg.pipeline_inputs(p) for p in self.flow.plans}
                                | {t for s in self.flow.sources()
                                   if (t := self._source_topic(s))})
            if not self.reader.read(wanted):
                self._ops.put(("retry",))

    def _report_ready(self) -> None:
        if self.reader.guard.down.is_set():
            self._unready_all("the broker is unreachable")
            return
        if stall := self.reader.guard.stall:
            self._unready_all(stall, stall)
            return
        for name, plan in list(self._unready.items()):
            if self._plan_topics(plan) <= self.reader.sub.assigned:
                del self._unready[name]
                log.info("pipeline %s v%d running", name, plan.version)
                self.report(name, plan.version, True, "")

    # -- consuming (its own thread) -------------------------------------------------------
    def consume(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Fetch records and hand them to the event loop (_on_records); apply pipeline
        changes and report readiness between polls."""
        self.reader = reader = Reader(self.cfg, self.group, self._written_topics, stop)
        # a record whose data waits in a join window keeps its offset uncommitted (flow.py)
        self.flow.on_hold, self.flow.on_free = self._hold, self._free
        try:
            while not stop.is_set():
                self._apply_ops()
                reader.reread_if_lost(lambda: self._unready_all("its topics were created again"))
                if reader.tracker.in_flight() > MAX_IN_FLIGHT:
                    stop.wait(0.05)
                    continue
                msgs = [(m, reader.tracker.begin(*position(m)))
                        for m in reader.fetch(IDLE_WAIT_S)]  # a record ends the wait
                if msgs:
                    loop.call_soon_threadsafe(self._on_records, msgs)
                reader.end_pass()
                self._report_ready()
        finally:
            reader.close()

    def _hold(self, hold: Hold) -> None:
        for t in hold:
            self.reader.tracker.produced(t)

    def _free(self, hold: Hold) -> None:
        for t in hold:
            self.reader.tracker.acked(t)

    # -- records, answers, windows (event loop) -------------------------------------------
    def _on_records(self, msgs: list[tuple[Message, Token]]) -> None:
        with self._lock:
            for msg, token in msgs:
                self._handle(msg, token)
            self._end_of_pass()

    def _end_of_pass(self) -> None:
        """After records or an answer were handled: the step calls they made go out (a batch
        with no window), the next window to close is timed, deliveries are served."""
        self.models.end_of_fetch()
        self._arm_expiry()
        self.producer.poll(0)

    def _source_of(self, msg: Message) -> tuple[Source, list[dict]] | None:
        """The event a record is, or None for records no pipeline uses; raises BadRecord for
        one that names a pipeline but cannot be used."""
        parsed = self.cfg.parse_topic(position(msg)[0])
        if parsed is None or parsed[0] != "pipeline":
            return None
        _, name, direction = parsed
        RECORDS.labels("pipeline").inc()
        try:
            tensors = _tensors_of(msg.value(), direction, strict=direction == "inputs")
        except InvalidInput as e:
            raise BadRecord(name, direction, 400, f"pipeline {name} {direction}: {e}") from None
        return (name, None, direction), tensors

    def _handle(self, msg: Message, token: Token) -> None:
        try:
            got = self._source_of(msg)
            if got is not None:
                headers = headers_of(msg)
                self._on_event(got[0], key_of(msg), got[1], [token], headers)
        except BadRecord as bad:
            self._refuse([token], key_of(msg), bad)
        except Exception as e:
            log.exception("record %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())
            parsed = self.cfg.parse_topic(position(msg)[0]) or ("", "", "")
            pipeline = headers_of(msg).get(H_PIPELINE) or parsed[1]
            self._refuse([token], key_of(msg), BadRecord(
                pipeline, "engine", 500, f"pipeline {pipeline}: the engine failed: {e!r}"))
        finally:
            self.reader.tracker.release(token)

    def _on_event(self, source: Source, key: str, tensors: list[dict], hold: Hold,
                  headers: Mapping[str, str]) -> None:
        deadline = headers.get(H_DEADLINE)
        for e in self.flow.on_event(source, key, tensors, time.monotonic(), hold):
            self._emit(e, hold, deadline, headers)

    def _emit(self, e: Emit, hold: Hold, deadline: str | None,
              trace: Mapping[str, str] | None = None) -> None:
        headers = [(H_PIPELINE, e.pipeline), (H_VERSION, str(e.version))]
        if deadline:
            headers.append((H_DEADLINE, deadline))
        span = tracing.start(f"pipeline {e.pipeline} {e.kind} {e.step}".rstrip(), trace,
                             pipeline=e.pipeline, step=e.step)
        headers = tracing.with_carrier(headers, span)
        tracing.end(span)
        EMITS.labels(e.kind).inc()
        # on behalf of the records joined into it too, then their hold (flow.py) is dropped
        tokens = hold + _tokens(e.held)
        tracker = self.reader.tracker
        if e.kind == STEP:
            self._call(e, tokens, [*headers, (H_STEP, e.step)])
        elif e.kind in (OUTPUT, INPUT):
            if e.kind == OUTPUT:
                topic = self.cfg.pipeline_outputs(e.pipeline)
                # Seldon's pipelines answer with an empty model_name (x-pipeline-version: which)
                value = {"model_name": "", "id": e.key, "outputs": e.tensors}
            else:
                topic = self.cfg.pipeline_inputs(e.pipeline)
                value = {"id": e.key, "inputs": e.tensors}
            tracker.produce(self.producer, tokens, topic, key=e.key, value=encode(value),
                            headers=headers)
        for t in _tokens(e.held):
            tracker.acked(t)

    def _call(self, e: Emit, tokens: Hold, headers: list[tuple[str, str]]) -> None:
        """Hand a step's request to the model gateway; its records stay uncommitted until the
        answer is handled (_on_answer). The request is written to the model's input topic."""
        value = encode({"id": e.key, "inputs": e.tensors})
        tracker = self.reader.tracker
        tracker.produce(self.records, tokens, self.cfg.model_inputs(e.step), key=e.key,
                        value=value, headers=headers)
        for t in tokens:
            tracker.produced(t)   # given back by _answered
        self.models.submit(StepCall(e.pipeline, e.step, e.step, e.key, value, headers, tokens),
                           self._batching.get(e.pipeline, {}).get(e.step))

    def _on_answer(self, call: StepCall, status: int, body: bytes | str,
                   headers: list[tuple[str, str]]) -> None:
        with self._lock:
            self._answered(call, status, body, headers)
            self._end_of_pass()

    def _answered(self, call: StepCall, status: int, body: bytes | str,
                  headers: list[tuple[str, str]]) -> None:
        """A step's answer: written to the model's output topic and taken on to the next
        steps, or its failure to the errors topic; then the call's hold is dropped."""
        tracker = self.reader.tracker
        try:
            if isinstance(body, str):
                self._error(call, status, body, headers)
                return
            tracker.produce(self.records, call.hold, self.cfg.model_outputs(call.model),
                            key=call.key, value=body, headers=headers)
            if call.pipeline not in self.flow.plans:
                return   # unloaded meanwhile
            try:
                tensors = _tensors_of(body, "outputs")
            except InvalidInput as e:
                raise BadRecord(call.pipeline, call.step, 502,
                                f"step {call.step} (model {call.model}) outputs: {e}") from None
            self._on_event((call.pipeline, call.step, "outputs"), call.key, tensors, call.hold,
                           dict(headers))
        except BadRecord as bad:
            self._refuse(call.hold, call.key, bad)
        except Exception as e:   # the caller gets an error, not a wait for its timeout
            log.exception("pipeline %s request %s: step %s's answer", call.pipeline, call.key,
                          call.step)
            self._refuse(call.hold, call.key, BadRecord(
                call.pipeline, "engine", 500,
                f"pipeline {call.pipeline}: the engine failed: {e!r}"))
        finally:
            for t in call.hold:
                tracker.acked(t)

    def _error(self, call: StepCall, status: int, reason: str,
               headers: list[tuple[str, str]]) -> None:
        msg = f"step {call.step} (model {call.model}): {reason}"
        log.info("pipeline %s request %s: %s", call.pipeline, call.key, msg)
        self.reader.tracker.produce(
            self.producer, call.hold, self.cfg.errors(), key=call.key,
            value=encode({"error": msg, "status": status, "step": call.step,
                          "model": call.model, "pipeline": call.pipeline}),
            headers=[*headers, (H_ERROR, msg), (H_MODEL, call.model), ("status", str(status))])

    def _refuse(self, hold: Hold, key: str, bad: BadRecord) -> None:
        """The errors topic gets the reason and the failing step; a caller waiting on the
        pipeline gateway gets it as its answer (bad.status)."""
        REFUSED.labels(bad.step).inc()
        log.warning("request %s refused: %s", key, bad)
        self.reader.tracker.produce(
            self.producer, hold, self.cfg.errors(), key=key,
            value=encode({"error": str(bad), "status": bad.status, "step": bad.step,
                          "pipeline": bad.pipeline}),
            headers=[(H_PIPELINE, bad.pipeline), (H_STEP, bad.step), (H_ERROR, str(bad)),
                     ("status", str(bad.status))])

    def _arm_expiry(self) -> None:
        """Wake when the next join window closes (the loop's clock is time.monotonic)."""
        deadline = self.flow.next_deadline()
        if deadline is None or (self._expiry is not None and not self._expiry.cancelled()
                                and self._expiry.when() <= deadline):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        with self._lock:
            for e in self.flow.expire(time.monotonic()):
                self._emit(e, [], None)
            self._end_of_pass()

    async def run(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self.producer = Producer({**self.cfg.producer(), **KAFKA_REQUESTS.config("producer")})
        self.records = Producer({**self.cfg.producer(linger_ms=RECORD_LINGER_MS),
                                 **KAFKA_REQUESTS.config("records")})
        self.models.open()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(service.in_thread(lambda: self.consume(loop, stop),
                                                    "consumer", stop))
                # deliveries between records
                for producer in (self.producer, self.records):
                    group.create_task(service.poll_producer(producer, stop))
        finally:
            stop.set()
            if self._expiry is not None:
                self._expiry.cancel()
            # the consumer has left, so calls still under way are cancelled: unfinished,
            # their records' offsets were not committed and are read again after a restart
            await self.models.close()
            for producer in (self.producer, self.records):
                producer.flush(5)


def main(argv: list[str] | None = None) -> None:
    s = load(EngineSettings, "python -m runtime.dataflow.engine", argv)
    service.run("engine", s, Engine(s.kafka_config(), s.envoy, model_timeout_s=s.model_timeout,
                                    envoy_ca=s.envoy_ca_file(), retry_s=s.retry_seconds))


if __name__ == "__main__":
    main()
