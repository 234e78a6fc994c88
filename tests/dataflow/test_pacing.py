"""Idle pacing on the embedded broker (runtime.dataflow.pacing): a consumer that has read nothing
for a while stops fetching every 2 ms and looks for records every PROBE_S instead; a record
produced meanwhile is still read, within a probe; a broker that holds fetches open (Apache
Kafka) is never paced."""

import json
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.pipelines import idle_cpu
from runtime.dataflow import pacing
from runtime.dataflow.kafkastats import STATS_INTERVAL_MS
from runtime.dataflow.pacing import Pacer
from runtime.dataflow.records import next_batch
from runtime.kafka import FETCH_WAIT_MS, KafkaConfig, ensure_topics
from tests.dataflow.conftest import (
    broker_service,
    outputs_of,
    running_dataflow,
    running_scheduler,
    tensor,
)


@pytest.fixture(scope="module")
def broker_kind() -> str:
    return "embedded"


tansu = pytest.fixture(scope="module", name="tansu")(broker_service)  # (service, bootstrap)


@pytest.fixture(scope="module")
def broker(tansu) -> str:
    return tansu[1]


# requests a second each dataflow service's Kafka clients send while dozing: a probe every
# PROBE_S is a fetch and two end-offset requests, about 15 a second (unpaced, its consumer
# fetched every 2.5 ms: about 400 a second). A count, so a slow machine does not move it.
IDLE_REQUESTS_PER_S = 60
# idle CPU of the embedded broker + engine + pipeline gateway, % of one core: 3.3 % on a quiet
# machine, 7.4-15.2 % on a slow one where each timer wake-up cost 0.2 ms of CPU (unpaced:
# 25-28 % on a quiet machine). The request count above is the sharper check.
IDLE_LIMIT = 20.0

scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)
dataflow = pytest.fixture(scope="module", name="dataflow")(running_dataflow)


def drive(consumer: Consumer, pacer: Pacer, until, deadline_s: float) -> list:
    """Poll as a service's consumer thread does until `until(records read so far)`."""
    got: list = []
    deadline = time.monotonic() + deadline_s
    while not until(got):
        assert time.monotonic() < deadline, "deadline passed"
        msgs = next_batch(consumer, pacer.timeout(0.25))
        pacer.read(len(msgs))
        got += msgs
    return got


def test_a_dozing_consumer_fetches_rarely_and_still_reads_a_new_record(broker):
    cfg = KafkaConfig(bootstrap=broker, prefix="pacing", fetch_wait_ms=FETCH_WAIT_MS["embedded"])
    topics = [cfg.pipeline_inputs(n) for n in ("a", "b")]
    ensure_topics(cfg, topics)
    fetches: list[int] = []   # the consumer's Fetch requests so far, from its statistics

    def stats(doc: str) -> None:
        fetches.append(sum(b["req"].get("Fetch", 0) for b in json.loads(doc)["brokers"].values()))

    consumer = Consumer({**cfg.consumer(None), "statistics.interval.ms": 200, "stats_cb": stats})
    producer = Producer(cfg.producer())
    try:
        consumer.assign([TopicPartition(t, 0, 0) for t in topics])
        pacer = Pacer(consumer, cfg.fetch_wait_ms)
        drive(consumer, pacer, lambda _: pacer.dozing, pacing.IDLE_S + 10)
        fetches.clear()
        started = time.monotonic()
        drive(consumer, pacer, lambda _: time.monotonic() - started >= 3, 10)
        dozed = time.monotonic() - started
        rate = (fetches[-1] - fetches[0]) / dozed
        # unpaced: a fetch every ~2.5 ms (about 400 a second); a probe costs about 1-3
        assert rate < 6 / pacing.PROBE_S, f"{rate:.0f} fetches a second while dozing"

        producer.produce(topics[1], key=b"k", value=b"v")
        producer.flush(10)
        sent = time.monotonic()
        got = drive(consumer, pacer, bool, 10)
        waited = time.monotonic() - sent
        assert [(m.topic(), m.value()) for m in got] == [(topics[1], b"v")]
        assert waited < pacing.PROBE_S + 1.0, f"read {waited:.2f}s after it was produced"
        assert not pacer.dozing
    finally:
        consumer.close()


class Recorder:
    """A consumer's pause/resume calls (no broker): the pacer's decisions alone."""

    def __init__(self, partitions: list[TopicPartition] | None = None):
        self.calls: list[str] = []
        self.partitions = [TopicPartition("t", 0)] if partitions is None else partitions

    def assignment(self):
        return self.partitions

    def pause(self, _parts):
        self.calls.append("pause")

    def resume(self, _parts):
        self.calls.append("resume")

    def offsets_for_times(self, parts, **_k):
        return parts


def idle_for(pacer: Pacer, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(pacer.timeout(0.01))   # the poll, with nothing to read
        pacer.read(0)


def test_a_broker_that_holds_fetches_open_is_never_paced(monkeypatch):
    monkeypatch.setattr(pacing, "IDLE_S", 0.05)
    consumer = Recorder()
    pacer = Pacer(consumer, FETCH_WAIT_MS["apache"])  # type: ignore[arg-type]
    idle_for(pacer, 0.3)
    assert consumer.calls == [] and not pacer.dozing


def test_a_woken_consumer_stops_dozing_at_its_next_poll(monkeypatch):
    monkeypatch.setattr(pacing, "IDLE_S", 0.05)
    monkeypatch.setattr(pacing, "PROBE_S", 10.0)   # no probe in this test
    consumer = Recorder()
    pacer = Pacer(consumer, FETCH_WAIT_MS["embedded"])  # type: ignore[arg-type]
    idle_for(pacer, 0.2)
    assert pacer.dozing and consumer.calls == ["pause"]
    waker = threading.Thread(target=pacer.wake)   # the pipeline gateway, on a request
    waker.start()
    waker.join()
    assert pacer.timeout(0.25) == 0.25 and consumer.calls == ["pause", "resume"]
    assert not pacer.dozing
    pacer.wake()   # while awake, as the gateway does on every pass with callers waiting
    pacer.read(0)
    idle_for(pacer, 0.2)   # the callers were answered: it dozes again
    assert pacer.dozing and consumer.calls == ["pause", "resume", "pause"]


def test_a_probe_that_cannot_be_made_is_not_tried_on_every_pass(monkeypatch):
    monkeypatch.setattr(pacing, "IDLE_S", 0.05)
    monkeypatch.setattr(pacing, "PROBE_S", 0.05)
    consumer = Recorder(partitions=[])   # between an unassign and the next assign
    pacer = Pacer(consumer, FETCH_WAIT_MS["embedded"])  # type: ignore[arg-type]
    idle_for(pacer, 0.2)
    assert pacer.dozing
    probes, end = 0, time.monotonic() + 0.3
    while time.monotonic() < end:
        wait = pacer.timeout(0.25)
        probes += wait == 0   # a probe's poll does not wait
        time.sleep(wait)
        pacer.read(0)
    assert probes <= 8, f"{probes} probes in 0.3 s (one per {pacing.PROBE_S}s expected)"


def test_idle_dataflow_services_send_few_requests_and_cost_little(dataflow, tansu):
    # the services doze IDLE_S after their last record: wait that out, then measure idle
    time.sleep(pacing.IDLE_S + 1)
    before = {n: dataflow.kafka_requests(n) for n in dataflow.metrics}
    start = time.monotonic()
    # two statistics intervals: the counts are updated every STATS_INTERVAL_MS
    used = idle_cpu({"broker": tansu[0], **dataflow.services}, 2 * STATS_INTERVAL_MS / 1000)
    rates = {n: (dataflow.kafka_requests(n) - before[n]) / (time.monotonic() - start)
             for n in before}
    print(f"idle Kafka requests a second: {rates}; idle % of a core: {used}")
    for name, rate in rates.items():
        assert before[name] > 0 and rate > 0, f"{name}: no Kafka requests counted"  # probes
        assert rate <= IDLE_REQUESTS_PER_S, f"{name}: {rate:.0f} Kafka requests a second idle"
    assert sum(used.values()) <= IDLE_LIMIT, f"idle above {IDLE_LIMIT} % of a core: {used}"


def test_a_request_after_the_services_dozed_is_answered_promptly(dataflow):
    time.sleep(pacing.IDLE_S + 1)   # idle: both services doze
    start = time.monotonic()
    r = dataflow.infer("chain", [tensor("x", [1.0, 2.0])])
    took = time.monotonic() - start
    assert outputs_of(r) == {"OUTPUT": [110.0, 120.0]}
    # a doze delays the engine's read by at most a probe; the gateway wakes on the request
    assert took < pacing.PROBE_S + 1.5, f"answered after {took:.2f}s"
