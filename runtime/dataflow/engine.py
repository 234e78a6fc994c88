"""Dataflow engine service: consumes pipeline input topics and model output topics, joins and
routes per the pipeline specs (runtime.dataflow.flow), produces model inputs and pipeline
outputs. One consumer group, so a restarted engine resumes where it stopped.

    python -m runtime.dataflow.engine --scheduler HOST:PORT --kafka-bootstrap HOST:PORT
"""

import logging
import queue
import threading
import time
from collections.abc import Mapping

from confluent_kafka import Message, Producer
from prometheus_client import Counter

from runtime import tracing
from runtime.dataflow import service
from runtime.dataflow.flow import INPUT, OUTPUT, STEP, Dataflow, Emit
from runtime.dataflow.offsets import Token
from runtime.dataflow.plan import Plan, build_plan
from runtime.dataflow.reader import Reader
from runtime.dataflow.records import IDLE_WAIT_S, decode, encode, headers_of, key_of, position
from runtime.dataflow.refs import RefError
from runtime.dataflow.validate import InvalidInput, check_tensors
from runtime.kafka import H_DEADLINE, H_ERROR, H_PIPELINE, H_STEP, H_VERSION, KafkaConfig
from runtime.settings import load
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger("engine")
GROUP = "seldon-dataflow-engine"
RECORDS = Counter("seldon_dataflow_engine_records_total", "records consumed", ["kind"])
EMITS = Counter("seldon_dataflow_engine_emits_total", "records produced", ["kind"])
REFUSED = Counter("seldon_dataflow_engine_refused_total",
                  "records that could not be processed (sent to the errors topic)", ["kind"])
Source = tuple[str, str | None, str]


class BadRecord(Exception):
    """A record the engine cannot use: reported on the errors topic, never raised further."""

    def __init__(self, pipeline: str, step: str, status: int, reason: str):
        super().__init__(reason)
        self.pipeline, self.step, self.status = pipeline, step, status


class EngineSettings(service.MetricsSettings):
    """The engine's flags: --scheduler, --metrics-*, --kafka-*."""


class Engine(service.Role):
    component = "engine"

    def __init__(self, cfg: KafkaConfig, group: str = GROUP):
        self.cfg, self.group = cfg, group
        self.flow = Dataflow()
        self._ops: queue.Queue = queue.Queue()
        self._unready: dict[str, Plan] = {}
        self.reader: Reader   # made by the consuming thread (consume)

    # -- control (any thread) -------------------------------------------------------------
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None:
        self._ops.put(("set", name, version, spec))

    def remove_pipeline(self, name: str) -> None:
        self._ops.put(("remove", name))

    # -- topics ---------------------------------------------------------------------------
    def _source_topic(self, source: tuple[str, str | None, str]) -> str | None:
        pipeline, step, direction = source
        if step is None:
            return (self.cfg.pipeline_inputs(pipeline) if direction == "inputs"
                    else self.cfg.pipeline_outputs(pipeline))
        # a step's inputs are served in-process (flow._with_step_inputs)
        return self.cfg.model_outputs(step) if direction == "outputs" else None

    def _plan_topics(self, plan: Plan) -> set[str]:
        consumed = {t for s in plan.sources() if (t := self._source_topic(s))}
        consumed.add(self.cfg.pipeline_inputs(plan.name))
        return consumed

    def _written_topics(self) -> set[str]:
        plans = list(self.flow.plans.values())
        out = {self.cfg.model_inputs(m) for p in plans for m in p.models}
        return out | {self.cfg.pipeline_outputs(p.name) for p in plans} | {self.cfg.errors()}

    def _unready_all(self, why: str, reason: str = "") -> None:
        """Pipelines are not Ready while their topics are gone, the broker is away (the
        scheduler shows PipelineCreating) or it stopped giving records (`reason`: shown as
        PipelineFailed); _report_ready says Ready again once that is over."""
        for name, plan in self.flow.plans.items():
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
                self.flow.remove(op[1])
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
            produced = {self.cfg.model_inputs(m) for m in plan.models}
            produced |= {self.cfg.pipeline_outputs(name), self.cfg.errors()}
            if not self.reader.ensure(sorted(self._plan_topics(plan) | produced),
                                      f"pipeline {name}"):
                self._ops.put(op)
                break
            self.flow.set_plan(plan)
            self._unready[name] = plan
        if changed:
            wanted = sorted({self.cfg.pipeline_inputs(p) for p in self.flow.plans}
                            | {t for s in self.flow.sources() if (t := self._source_topic(s))})
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

    # -- data -----------------------------------------------------------------------------
    def _source_of(self, msg: Message) -> tuple[Source, list[dict]] | None:
        """The event a record is, or None for records no pipeline uses; raises BadRecord for
        one that names a pipeline but cannot be used."""
        parsed = self.cfg.parse_topic(position(msg)[0])
        if parsed is None:
            return None
        kind, name, direction = parsed
        h = headers_of(msg)
        if kind == "model":
            if direction != "outputs" or H_PIPELINE not in h:
                return None
            pipeline, step = h[H_PIPELINE], h.get(H_STEP) or name
            where, status, field = f"step {step} (model {name}) outputs", 502, "outputs"
        elif kind == "pipeline":
            pipeline, step = name, None
            where, status = f"pipeline {name} {direction}", 400
            field = "inputs" if direction == "inputs" else "outputs"
        else:
            return None
        RECORDS.labels(kind).inc()
        doc = decode(msg.value())
        if doc is None:
            raise BadRecord(pipeline, step or direction, status,
                            f"{where}: the record is not a JSON object")
        try:
            tensors = check_tensors(doc.get(field, []), field,
                                    strict=kind == "pipeline" and direction == "inputs")
        except InvalidInput as e:
            raise BadRecord(pipeline, step or direction, status, f"{where}: {e}") from None
        return (pipeline, step, direction), tensors

    def _produce(self, producer: Producer, e: Emit, token: Token | None,
                 deadline: str | None, trace: Mapping[str, str] | None = None) -> None:
        headers = [(H_PIPELINE, e.pipeline), (H_VERSION, str(e.version))]
        if deadline:
            headers.append((H_DEADLINE, deadline))
        span = tracing.start(f"pipeline {e.pipeline} {e.kind} {e.step}".rstrip(), trace,
                             pipeline=e.pipeline, step=e.step)
        headers = tracing.with_carrier(headers, span)
        tracing.end(span)
        if e.kind == STEP:
            topic = self.cfg.model_inputs(e.step)
            headers.append((H_STEP, e.step))
            value = {"id": e.key, "inputs": e.tensors}
        elif e.kind == OUTPUT:
            topic = self.cfg.pipeline_outputs(e.pipeline)
            # Seldon's pipelines answer with an empty model_name (x-pipeline-version says which)
            value = {"model_name": "", "id": e.key, "outputs": e.tensors}
        elif e.kind == INPUT:
            topic = self.cfg.pipeline_inputs(e.pipeline)
            value = {"id": e.key, "inputs": e.tensors}
        else:
            topic, value = "", {}
        EMITS.labels(e.kind).inc()
        # on behalf of the records joined into it too, then their hold (flow.py) is dropped
        tokens = ([token] if token is not None else []) + e.held
        if topic:
            self.reader.tracker.produce(producer, tokens, topic, key=e.key, value=encode(value),
                                 headers=headers)
        for held in e.held:
            self.reader.tracker.acked(held)

    def _refuse(self, producer: Producer, msg: Message, token: Token, bad: BadRecord) -> None:
        """The errors topic gets the reason and the failing step; a caller waiting on the
        pipeline gateway gets it as its answer (bad.status)."""
        REFUSED.labels(bad.step).inc()
        key = key_of(msg)
        log.warning("request %s refused: %s", key, bad)
        self.reader.tracker.produce(
            producer, token, self.cfg.errors(), key=key,
            value=encode({"error": str(bad), "status": bad.status, "step": bad.step,
                          "pipeline": bad.pipeline}),
            headers=[(H_PIPELINE, bad.pipeline), (H_STEP, bad.step), (H_ERROR, str(bad)),
                     ("status", str(bad.status))])

    def _handle(self, producer: Producer, msg: Message) -> None:
        token = self.reader.tracker.begin(*position(msg))
        try:
            got = self._source_of(msg)
            if got is not None:
                headers = headers_of(msg)
                deadline = headers.get(H_DEADLINE)
                for e in self.flow.on_event(got[0], key_of(msg), got[1], time.monotonic(),
                                            token):
                    self._produce(producer, e, token, deadline, headers)
        except BadRecord as bad:
            self._refuse(producer, msg, token, bad)
        except Exception as e:
            log.exception("record %s[%d]@%d", msg.topic(), msg.partition(), msg.offset())
            parsed = self.cfg.parse_topic(position(msg)[0]) or ("", "", "")
            pipeline = headers_of(msg).get(H_PIPELINE) or parsed[1]
            self._refuse(producer, msg, token, BadRecord(
                pipeline, "engine", 500, f"pipeline {pipeline}: the engine failed: {e!r}"))
        finally:
            self.reader.tracker.release(token)

    def _poll_timeout(self) -> float:
        """How long a poll may wait: a record ends it at once, so only the next join window
        to close (and pipeline changes) bound it; a long wait keeps an idle engine idle."""
        deadline = self.flow.next_deadline()
        if deadline is None:
            return IDLE_WAIT_S
        return min(IDLE_WAIT_S, max(0.0, deadline - time.monotonic()))

    async def run(self, stop: threading.Event) -> None:
        await service.in_thread(lambda: self.consume(stop), "consumer", stop)

    def consume(self, stop: threading.Event) -> None:
        """The engine's loop, on a thread of its own: records are handled in order as they
        come (joins and routing are quick), so no event loop is needed."""
        self.reader = reader = Reader(self.cfg, self.group, self._written_topics, stop)
        producer = Producer(self.cfg.producer())
        # a record waiting in a join window keeps its offset uncommitted (flow.py)
        self.flow.on_hold, self.flow.on_free = reader.tracker.produced, reader.tracker.acked
        try:
            while not stop.is_set():
                self._apply_ops()
                reader.reread_if_lost(lambda: self._unready_all("its topics were created again"))
                for msg in reader.fetch(self._poll_timeout()):
                    self._handle(producer, msg)
                for e in self.flow.expire(time.monotonic()):
                    self._produce(producer, e, None, None)
                producer.poll(0)
                reader.end_pass()
                self._report_ready()
        finally:
            producer.flush(5)
            reader.close()


def main(argv: list[str] | None = None) -> None:
    settings = load(EngineSettings, "python -m runtime.dataflow.engine", argv)
    service.run("engine", settings, Engine(settings.kafka_config()))


if __name__ == "__main__":
    main()
