"""Dataflow engine service: consumes pipeline input topics and model output topics, joins and
routes per the pipeline specs (runtime.dataflow.flow), produces model inputs and pipeline
outputs. One consumer group, so a restarted engine resumes where it stopped.

    python -m runtime.dataflow.engine --scheduler HOST:PORT --kafka-bootstrap HOST:PORT
"""

import argparse
import logging
import queue
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer
from prometheus_client import Counter, start_http_server

from runtime import kafka
from runtime.dataflow.control import SchedulerLink
from runtime.dataflow.flow import INPUT, OUTPUT, STEP, Dataflow, Emit
from runtime.dataflow.plan import Plan, build_plan
from runtime.dataflow.records import (
    decode,
    encode,
    headers_of,
    key_of,
    next_batch,
    setup_service,
)
from runtime.dataflow.refs import RefError
from runtime.kafka import H_PIPELINE, H_STEP, H_VERSION, KafkaConfig
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger("engine")
GROUP = "seldon-dataflow-engine"
RECORDS = Counter("seldon_dataflow_engine_records_total", "records consumed", ["kind"])
EMITS = Counter("seldon_dataflow_engine_emits_total", "records produced", ["kind"])


def _no_report(name: str, version: int, ready: bool, reason: str = "") -> None:
    pass


class Engine:
    def __init__(self, cfg: KafkaConfig, group: str = GROUP):
        self.cfg, self.group = cfg, group
        self.flow = Dataflow()
        self.report = _no_report
        self._ops: queue.Queue = queue.Queue()
        self._assigned: set[str] = set()
        self._subscribed: list[str] = []
        self._unready: dict[str, Plan] = {}

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

    def _apply_ops(self, consumer: Consumer) -> None:
        changed = False
        while True:
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                break
            changed = True
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
            try:
                kafka.ensure_topics(self.cfg, sorted(self._plan_topics(plan) | produced))
            except Exception as e:  # noqa: BLE001 - broker away: keep running, retry soon
                log.warning("pipeline %s: creating topics failed (%s); retrying", name, e)
                self._ops.put(op)
                time.sleep(1)
                break
            self.flow.set_plan(plan)
            self._unready[name] = plan
        if changed:
            wanted = sorted({self.cfg.pipeline_inputs(p) for p in self.flow.plans}
                            | {t for s in self.flow.sources() if (t := self._source_topic(s))})
            if wanted != self._subscribed:
                self._subscribed = wanted
                if wanted:
                    consumer.subscribe(wanted, on_assign=self._on_assign,
                                       on_revoke=self._on_revoke)
                else:
                    consumer.unsubscribe()
                    self._assigned = set()

    def _on_assign(self, consumer, partitions) -> None:
        self._assigned = {p.topic for p in partitions}
        log.info("assigned %d partitions", len(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        self._assigned = set()

    def _report_ready(self) -> None:
        for name, plan in list(self._unready.items()):
            if self._plan_topics(plan) <= self._assigned:
                del self._unready[name]
                log.info("pipeline %s v%d running", name, plan.version)
                self.report(name, plan.version, True, "")

    # -- data -----------------------------------------------------------------------------
    def _source_of(self, msg) -> tuple[tuple[str, str | None, str], list[dict]] | None:
        parsed = self.cfg.parse_topic(msg.topic())
        doc = decode(msg.value())
        if parsed is None or doc is None:
            return None
        kind, name, direction = parsed
        RECORDS.labels(kind).inc()
        if kind == "pipeline":
            tensors = doc.get("inputs" if direction == "inputs" else "outputs") or []
            return (name, None, direction), tensors
        if kind == "model" and direction == "outputs":
            h = headers_of(msg)
            if H_PIPELINE not in h:
                return None
            return (h[H_PIPELINE], h.get(H_STEP) or name, "outputs"), doc.get("outputs") or []
        return None

    def _produce(self, producer: Producer, e: Emit) -> None:
        headers = [(H_PIPELINE, e.pipeline), (H_VERSION, str(e.version))]
        if e.kind == STEP:
            topic = self.cfg.model_inputs(e.step)
            headers.append((H_STEP, e.step))
            value = {"id": e.key, "inputs": e.tensors}
        elif e.kind == OUTPUT:
            topic = self.cfg.pipeline_outputs(e.pipeline)
            value = {"model_name": e.pipeline, "id": e.key, "outputs": e.tensors}
        elif e.kind == INPUT:
            topic = self.cfg.pipeline_inputs(e.pipeline)
            value = {"id": e.key, "inputs": e.tensors}
        else:
            return
        EMITS.labels(e.kind).inc()
        producer.produce(topic, key=e.key, value=encode(value), headers=headers)

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer(self.cfg.consumer(self.group))
        producer = Producer(self.cfg.producer())
        try:
            while not stop.is_set():
                self._apply_ops(consumer)
                if not self._subscribed:
                    stop.wait(0.05)
                    continue
                for msg in next_batch(consumer, 0.02):
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("consume: %s", msg.error())
                        continue
                    got = self._source_of(msg)
                    if got is None:
                        continue
                    for e in self.flow.on_event(got[0], key_of(msg), got[1], time.monotonic()):
                        self._produce(producer, e)
                for e in self.flow.expire(time.monotonic()):
                    self._produce(producer, e)
                producer.poll(0)
                self._report_ready()
        finally:
            producer.flush(5)
            consumer.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m runtime.dataflow.engine")
    p.add_argument("--scheduler", required=True, help="HOST:PORT of the scheduler API")
    p.add_argument("--metrics-port", type=int, default=0)
    kafka.add_arguments(p)
    args = p.parse_args(argv)
    stop = setup_service("engine")
    if args.metrics_port:
        start_http_server(args.metrics_port)
    engine = Engine(kafka.from_args(args))
    link = SchedulerLink(args.scheduler, engine, "engine")
    engine.report = link.report
    link.start()
    engine.run(stop)
    link.stop()


if __name__ == "__main__":
    main()
