"""At-least-once under a model-server crash: asynchronous requests produced straight to a
pipeline's input topic while MLServer is killed -9 and restarted are all answered (the model
gateway retries transient failures; offsets are committed only after outputs are produced)."""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runtime.dataflow.records import key_of
from runtime.procs import http_ok, wait_until
from tests.dataflow.conftest import (
    SAMPLE_MODELS,
    running_broker,
    running_dataflow,
    running_scheduler,
    start_and_wait_mlserver,
    start_mlserver,
    tensor,
)

broker = pytest.fixture(scope="module", name="broker")(running_broker)
scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)


@pytest.fixture(scope="module")
def model_server(logs, tmp_path_factory):
    svc, url = start_mlserver(logs, tmp_path_factory.mktemp("crash-models"), "mlserver-crash")
    try:
        yield svc, url
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def dataflow(logs, scheduler, broker, model_server):
    yield from running_dataflow(logs, scheduler, broker, model_server[1])


class OutputReader:
    """Reads a topic from a given offset and keeps the first value seen per key."""

    def __init__(self, cfg, topic: str):
        self.consumer = Consumer(cfg.consumer(None))
        start = self.consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        self.consumer.assign([TopicPartition(topic, 0, start)])
        self.seen: dict[str, dict] = {}
        self.duplicates = 0

    def poll(self) -> int:
        for msg in self.consumer.consume(1000, timeout=0.2):
            if msg.error():
                continue
            key = key_of(msg)
            if key in self.seen:
                self.duplicates += 1
            else:
                self.seen[key] = json.loads(msg.value() or b"")
        return len(self.seen)

    def close(self) -> None:
        self.consumer.close()


def test_async_requests_survive_a_model_server_kill(dataflow, model_server):
    svc, url = model_server
    cfg = dataflow.kafka
    reader = OutputReader(cfg, cfg.pipeline_outputs("chain"))
    errors = OutputReader(cfg, cfg.errors())
    producer = Producer(cfg.producer())
    sent: dict[str, float] = {}

    def burst(n: int) -> None:
        for _ in range(n):
            rid, x = uuid.uuid4().hex, float(len(sent))
            sent[rid] = (x + 10) * 10
            producer.produce(cfg.pipeline_inputs("chain"), key=rid,
                             value=json.dumps({"inputs": [tensor("x", [x])]}).encode())
        assert producer.flush(10) == 0

    try:
        burst(100)
        wait_until(lambda: reader.poll() >= 20, 30, "the pipeline answering")
        svc.kill()                      # kill -9, mid-stream
        burst(100)                      # while the model server is gone
        start = time.monotonic()
        svc.start()
        burst(50)                       # while it starts and loads its models
        wait_until(lambda: svc.alive() and _ready(url), 90, "MLServer back", proc=svc)
        back_after = time.monotonic() - start
        burst(50)
        wait_until(lambda: reader.poll() >= len(sent), 120, "every request answered")
        errors.poll()
        lost = [rid for rid in sent if rid not in reader.seen]
        wrong = [rid for rid, want in sent.items()
                 if reader.seen[rid]["outputs"][0]["data"] != [want]]
        print(f"{len(sent)} async requests, MLServer back after {back_after:.1f}s, "
              f"lost {len(lost)}, duplicates {reader.duplicates}")
        assert not lost and not wrong
        assert not [k for k in errors.seen if k in sent], "a request ended as an error"
        assert all(s.alive() for s in dataflow.services.values())
    finally:
        reader.close()
        errors.close()
        if not svc.alive():
            start_and_wait_mlserver(svc, url)


def _ready(url: str) -> bool:
    return all(http_ok(f"{url}/v2/models/{m}/ready") for m in SAMPLE_MODELS)
