"""Model gateway: consumes the input topics of every model used by a pipeline, calls the model
over HTTP (through Envoy: `seldon-model` header), and produces the response to the model's
output topic, or an error naming the step to the errors topic. Records keep their headers, so
pipelines sharing a model are told apart.

    python -m runtime.dataflow.modelgateway --scheduler H:P --kafka-bootstrap H:P --envoy URL
"""

import argparse
import asyncio
import logging
import threading
import time

import aiohttp
from confluent_kafka import Consumer, KafkaError, Producer
from prometheus_client import Counter, Histogram, start_http_server

from runtime import kafka
from runtime.dataflow.control import SchedulerLink
from runtime.dataflow.records import (
    decode,
    encode,
    headers_of,
    key_of,
    next_batch,
    setup_service,
)
from runtime.kafka import H_ERROR, H_MODEL, H_PIPELINE, H_STEP, KafkaConfig
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger("modelgateway")
MODEL_CALLS = Counter("seldon_modelgateway_calls_total", "model calls from pipelines",
                      ["model", "code"])
MODEL_SECONDS = Histogram("seldon_modelgateway_call_seconds", "model call latency", ["model"],
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30))
GROUP = "seldon-modelgateway"


class ModelGateway:
    def __init__(self, cfg: KafkaConfig, envoy: str, timeout_s: float = 30,
                 concurrency: int = 256, group: str = GROUP):
        self.cfg, self.envoy = cfg, envoy.rstrip("/")
        self.timeout_s, self.group = timeout_s, group
        self.report = lambda name, version, ready, reason="": None
        self._lock = threading.Lock()
        self._pipelines: dict[str, tuple[int, set[str]]] = {}
        self._dirty = threading.Event()
        self._assigned: set[str] = set()
        self._unready: set[str] = set()
        self._sem = asyncio.Semaphore(concurrency)

    # -- control --------------------------------------------------------------------------
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None:
        with self._lock:
            self._pipelines[name] = (version, {s.name for s in spec.steps})
            self._unready.add(name)
        self._dirty.set()

    def remove_pipeline(self, name: str) -> None:
        with self._lock:
            self._pipelines.pop(name, None)
            self._unready.discard(name)
        self._dirty.set()

    def _topics_of(self, models: set[str]) -> set[str]:
        return {self.cfg.model_inputs(m) for m in models}

    # -- consuming (its own thread) -------------------------------------------------------
    def _consume(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        consumer = Consumer(self.cfg.consumer(self.group))
        subscribed: list[str] = []

        def on_assign(_c, parts):
            self._assigned = {p.topic for p in parts}

        def on_revoke(_c, _parts):
            self._assigned = set()

        try:
            while not stop.is_set():
                if self._dirty.is_set():
                    self._dirty.clear()
                    with self._lock:
                        models = set().union(*(m for _, m in self._pipelines.values()))
                    wanted = sorted(self._topics_of(models))
                    try:
                        if wanted:
                            kafka.ensure_topics(self.cfg, wanted + [
                                self.cfg.model_outputs(m) for m in models] + [self.cfg.errors()])
                    except Exception as e:  # noqa: BLE001 - broker away: retry soon
                        log.warning("creating topics failed (%s); retrying", e)
                        self._dirty.set()
                        stop.wait(1)
                        continue
                    if wanted != subscribed:
                        subscribed = wanted
                        if wanted:
                            consumer.subscribe(wanted, on_assign=on_assign, on_revoke=on_revoke)
                        else:
                            consumer.unsubscribe()
                            self._assigned = set()
                if not subscribed:
                    stop.wait(0.05)
                    continue
                msgs = []
                for m in next_batch(consumer, 0.05):
                    if not m.error():
                        msgs.append(m)
                    elif m.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consume: %s", m.error())
                if msgs:
                    loop.call_soon_threadsafe(self._dispatch, msgs)
                self._report_ready()
        finally:
            consumer.close()

    def _report_ready(self) -> None:
        with self._lock:
            done = [(n, self._pipelines[n][0]) for n in self._unready
                    if self._topics_of(self._pipelines[n][1]) <= self._assigned]
            self._unready -= {n for n, _ in done}
        for name, version in done:
            self.report(name, version, True, "")

    # -- calling models (event loop) ------------------------------------------------------
    def _dispatch(self, msgs) -> None:
        for m in msgs:
            asyncio.ensure_future(self._infer(m))

    async def _infer(self, msg) -> None:
        parsed = self.cfg.parse_topic(msg.topic())
        if parsed is None:
            return
        model = parsed[1]
        headers = headers_of(msg)
        step = headers.get(H_STEP, model)
        key = key_of(msg)
        out_headers = [(k, v) for k, v in headers.items()]
        start = time.perf_counter()
        try:
            async with self._sem:
                async with self.session.post(
                        f"{self.envoy}/v2/models/{model}/infer", data=msg.value(),
                        headers={"seldon-model": model, "content-type": "application/json",
                                 "x-request-id": key}) as r:
                    body = await r.read()
                    status = r.status
        except (TimeoutError, aiohttp.ClientError) as e:
            timed_out = isinstance(e, TimeoutError)
            MODEL_CALLS.labels(model, "504" if timed_out else "502").inc()
            reason = f"no answer within {self.timeout_s:g}s" if timed_out else str(e) or repr(e)
            self._error(key, out_headers, step, model, 504 if timed_out else 502,
                        f"calling the model failed: {reason}")
            return
        MODEL_CALLS.labels(model, str(status)).inc()
        MODEL_SECONDS.labels(model).observe(time.perf_counter() - start)
        if 200 <= status < 300:
            self.producer.produce(self.cfg.model_outputs(model), key=key, value=body,
                                  headers=out_headers)
        else:
            detail = body.decode(errors="replace")[:2000]
            doc = decode(body)
            if doc and isinstance(doc.get("error") or doc.get("detail"), str):
                detail = doc.get("error") or doc.get("detail")
            self._error(key, out_headers, step, model, status, f"HTTP {status}: {detail}")
        self.producer.poll(0)

    def _error(self, key, headers, step, model, status, reason) -> None:
        pipeline = dict(headers).get(H_PIPELINE, "")
        msg = f"step {step} (model {model}): {reason}"
        log.info("pipeline %s request %s: %s", pipeline, key, msg)
        self.producer.produce(
            self.cfg.errors(), key=key,
            value=encode({"error": msg, "status": status, "step": step, "model": model,
                          "pipeline": pipeline}),
            headers=headers + [(H_ERROR, msg), (H_MODEL, model), ("status", str(status))])

    async def run(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self.producer = Producer(self.cfg.producer())
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=128, keepalive_timeout=60))
        consumer = threading.Thread(target=self._consume, args=(loop, stop), daemon=True)
        consumer.start()
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
                self.producer.poll(0)
        finally:
            await asyncio.to_thread(consumer.join, 10)
            await self.session.close()
            self.producer.flush(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m runtime.dataflow.modelgateway")
    p.add_argument("--scheduler", required=True, help="HOST:PORT of the scheduler API")
    p.add_argument("--envoy", required=True, help="base URL models are called on")
    p.add_argument("--model-timeout", type=float, default=30, help="seconds per model call")
    p.add_argument("--metrics-port", type=int, default=0)
    kafka.add_arguments(p)
    args = p.parse_args(argv)
    stop = setup_service("modelgateway")
    if args.metrics_port:
        start_http_server(args.metrics_port)
    gw = ModelGateway(kafka.from_args(args), args.envoy, args.model_timeout)
    link = SchedulerLink(args.scheduler, gw, "modelgateway")
    gw.report = link.report
    link.start()
    asyncio.run(gw.run(stop))
    link.stop()


if __name__ == "__main__":
    main()
