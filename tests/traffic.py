"""Steady traffic against a running local platform, every outcome recorded with its time:
synchronous calls through Envoy (REST or gRPC, one thread each, paced), and asynchronous
pipeline requests produced to a pipeline's input topic and matched by request id on its
output topic (or the errors topic). Used by tests/test_kill9.py and bench/soak.py."""

import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from runtime.kafka import KafkaConfig
from runtime.pb import grpc_service_pb2 as oip
from runtime.pb import grpc_service_pb2_grpc as oip_grpc


@dataclass
class Outcome:
    start: float
    end: float
    ok: bool
    detail: str = ""


def tensor(name: str, data: list, datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


class Rest:
    """POSTs one body to one path on a keep-alive connection, reconnecting after a failure."""

    def __init__(self, url: str, path: str, body: dict, want: Callable[[dict], bool],
                 headers: dict | None = None, timeout: float = 30):
        u = urlparse(url)
        self.host, self.port, self.path, self.timeout = u.hostname, u.port, path, timeout
        self.body, self.want = json.dumps(body).encode(), want
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.conn: http.client.HTTPConnection | None = None

    def __call__(self) -> tuple[bool, str]:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", self.path, self.body, self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return False, f"{type(e).__name__}: {e}"
        if resp.status != 200:
            return False, f"{resp.status} {data[:200]!r}"
        try:
            return self.want(json.loads(data)), ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return False, f"bad answer {e!r}: {data[:200]!r}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Grpc:
    """ModelInfer through Envoy with one FP32 input."""

    def __init__(self, address: str, model: str, name: str, data: list[float],
                 want: Callable[[oip.ModelInferResponse], bool], timeout: float = 30):
        self.channel = grpc.insecure_channel(address)
        self.stub = oip_grpc.GRPCInferenceServiceStub(self.channel)
        self.request = oip.ModelInferRequest(model_name=model)
        t = self.request.inputs.add(name=name, datatype="FP32", shape=[1, len(data)])
        t.contents.fp32_contents.extend(data)
        self.want, self.timeout = want, timeout
        self.metadata = (("seldon-model", model),)

    def __call__(self) -> tuple[bool, str]:
        try:
            resp = self.stub.ModelInfer(self.request, timeout=self.timeout,
                                        metadata=self.metadata)
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
        return self.want(resp), ""

    def close(self) -> None:
        self.channel.close()


class SyncLoad:
    """One thread calling `call` every `interval` seconds (or back to back when it is slower)."""

    def __init__(self, name: str, call, interval: float = 0.05):
        self.name, self.call, self.interval = name, call, interval
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{name}", daemon=True)

    def start(self) -> "SyncLoad":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.call.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            ok, detail = self.call()
            self.outcomes.append(Outcome(start, time.monotonic(), ok, detail))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def since(self, t: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.end >= t]

    def error_window(self, t: float) -> tuple[float, int, int]:
        """(seconds from the first to the end of the last failed call that ended after `t`,
        failures, calls) — 0 s when none failed."""
        got = self.since(t)
        bad = [o for o in got if not o.ok]
        if not bad:
            return 0.0, 0, len(got)
        return max(o.end for o in bad) - min(o.start for o in bad), len(bad), len(got)

    def healthy_since(self, t: float, n: int = 3) -> bool:
        """The last n calls started after `t` all succeeded."""
        got = [o for o in list(self.outcomes) if o.start >= t][-n:]
        return len(got) == n and all(o.ok for o in got)


class AsyncLoad:
    """Requests produced to `pipeline`'s input topic at a steady rate (a failed delivery is
    produced again, as a client would), answers read back by request id."""

    def __init__(self, cfg: KafkaConfig, pipeline: str, expect: Callable[[float], list],
                 interval: float = 0.1):
        self.cfg, self.pipeline, self.expect, self.interval = cfg, pipeline, expect, interval
        self.sent: dict[str, float] = {}      # request id -> x
        self.acked: dict[str, float] = {}     # request id -> when the broker acknowledged it
        self.answers: dict[str, float] = {}   # request id -> when its answer was read
        self.wrong: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.redelivered = 0
        self._later: list[str] = []   # produce refused at once: produced again next round
        self.duplicates = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reread = threading.Event()
        self.producer = Producer({**cfg.producer(), "message.timeout.ms": 10000})
        self.consumer = Consumer(cfg.consumer(None))
        self._assign(from_start=False)
        self._threads = [threading.Thread(target=f, daemon=True, name=f"async-{f.__name__}")
                         for f in (self._produce_loop, self._read_loop)]

    def start(self) -> "AsyncLoad":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        self.producer.flush(5)
        self.consumer.close()

    def reread(self) -> None:
        """The topics were created again (broker restart): read them from their start."""
        self._reread.set()

    def _assign(self, from_start: bool) -> None:
        """Explicit offsets: OFFSET_END is resolved at the first fetch, skipping what came
        before it."""
        parts = []
        for topic in (self.cfg.pipeline_outputs(self.pipeline), self.cfg.errors()):
            part = TopicPartition(topic, 0, OFFSET_BEGINNING)
            if not from_start:
                part.offset = self.consumer.get_watermark_offsets(part, timeout=10)[1]
            parts.append(part)
        self.consumer.assign(parts)

    def _produce_one(self, rid: str) -> None:
        def delivered(err, _msg) -> None:
            if err is not None:
                with self._lock:
                    self.redelivered += 1
                if not self._stop.is_set():
                    self._produce_one(rid)
            else:
                with self._lock:
                    self.acked.setdefault(rid, time.monotonic())

        value = json.dumps({"inputs": [tensor("x", [self.sent[rid]])]}).encode()
        while True:
            try:
                self.producer.produce(self.cfg.pipeline_inputs(self.pipeline), key=rid,
                                      value=value, on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException:  # e.g. the topic is gone (broker restart): try again later
                with self._lock:
                    self.redelivered += 1
                    self._later.append(rid)
                return

    def _produce_loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            with self._lock:
                later, self._later = self._later, []
            for rid in later:
                self._produce_one(rid)
            rid = uuid.uuid4().hex
            with self._lock:
                self.sent[rid] = float(n % 100)
            n += 1
            self._produce_one(rid)
            self.producer.poll(0)
            self._stop.wait(self.interval)
            self.producer.poll(0)

    def _read_loop(self) -> None:
        errors = self.cfg.errors()
        while not self._stop.is_set():
            if self._reread.is_set():
                self._reread.clear()
                self._assign(from_start=True)
            for msg in self.consumer.consume(500, timeout=0.2):
                if msg.error() or msg.key() is None:
                    continue
                rid = msg.key().decode()
                with self._lock:
                    if rid not in self.sent:
                        continue
                    if msg.topic() == errors:
                        self.errors.setdefault(rid, msg.value().decode(errors="replace")[:200])
                        continue
                    if rid in self.answers:
                        self.duplicates += 1
                        continue
                    self.answers[rid] = time.monotonic()
                    try:
                        data = json.loads(msg.value())["outputs"][0]["data"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        data = None
                    if data != self.expect(self.sent[rid]):
                        self.wrong[rid] = repr(data)

    def unanswered(self, acked_before: float | None = None) -> set[str]:
        """Acknowledged requests with no answer yet (only those acked before a time)."""
        with self._lock:
            return {r for r, t in self.acked.items() if r not in self.answers
                    and (acked_before is None or t < acked_before)}
