"""Which partition assignment a dataflow service uses, and the at-least-once bookkeeping."""

import asyncio
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition

from runtime.dataflow.engine import Engine
from runtime.dataflow.offsets import OffsetTracker
from runtime.dataflow.pipelinegateway import InferError, PipelineGateway
from runtime.dataflow.plan import build_plan
from runtime.dataflow.subscription import STALL_S, Subscription
from runtime.kafka import KafkaConfig
from runtime.specs.pipeline import PipelineSpec


@pytest.mark.parametrize("bootstrap, mode", [
    ("127.0.0.1:9092", "static"),
    ("localhost:9092,127.0.0.2:9093", "static"),
    ("[::1]:9092", "static"),
    ("kafka.core2.svc:9092", "group"),
    ("127.0.0.1:9092,kafka:9092", "group"),
])
def test_auto_assignment_is_static_only_on_loopback(bootstrap, mode):
    assert KafkaConfig(bootstrap=bootstrap).resolved_assignment() == mode
    assert KafkaConfig(bootstrap=bootstrap, assignment="group").resolved_assignment() == "group"


class FakeConsumer:
    def __init__(self):
        self.stored: list[tuple[str, int, int]] = []

    def store_offsets(self, offsets):
        self.stored += [(p.topic, p.partition, p.offset) for p in offsets]


def test_offsets_are_stored_only_for_the_finished_prefix():
    consumer = FakeConsumer()
    t = OffsetTracker(consumer)
    a, b, c = (t.begin("in", 0, n) for n in (10, 11, 12))
    t.produced(a)
    t.produced(b)
    t.release(b)
    t.acked(b)                     # 11 finished, but 10 is still producing: nothing stored
    t.release(c)
    assert consumer.stored == []
    t.release(a)
    assert consumer.stored == []   # released, its output not acknowledged yet
    t.acked(a)
    assert consumer.stored == []   # stored by the consumer's thread, between polls
    t.flush()
    assert consumer.stored == [("in", 0, 13)]  # 10, 11, 12 all done: next to read is 13
    assert t.in_flight() == 0


def test_revoked_partitions_store_nothing_more():
    consumer = FakeConsumer()
    t = OffsetTracker(consumer)
    a = t.begin("in", 1, 5)
    t.forget([("in", 1)])
    t.release(a)
    t.flush()
    assert consumer.stored == []


class PositionConsumer:
    """What Subscription.stalled asks: the consumer's positions, and the high watermarks
    from an admin client (this object plays both)."""

    def __init__(self, position: int, high: int):
        self.pos, self.high = position, high

    def position(self, parts):
        return [TopicPartition(p.topic, p.partition, self.pos) for p in parts]

    def list_offsets(self, specs, request_timeout=None):
        def done(offset):
            f = Future()
            f.set_result(SimpleNamespace(offset=offset))
            return f
        return {p: done(self.high) for p in specs}


def test_reading_counts_as_stalled_when_records_wait_and_the_position_stays():
    consumer = PositionConsumer(position=2639, high=4960)
    sub = Subscription(consumer, "static")
    sub._parts = {"in": [TopicPartition("in", 0)]}

    def check(now: float) -> str | None:
        sub.stalled.sample()   # the consumer's thread, between polls: asked for by the last
        return sub.stalled(now, consumer)   # check (the topic guard's thread)

    assert sub.stalled(0.0, consumer) is None        # nothing sampled yet
    assert check(0.0) is None
    assert check(STALL_S - 1) is None
    assert "on in at offset 2639 of 4960" in check(STALL_S + 1)
    assert "on in at offset 2639" in sub.stalled(STALL_S + 1.5, consumer)  # no new sample
    consumer.pos = 2700                              # moving again
    assert check(STALL_S + 2) is None
    consumer.pos = consumer.high = 4960              # caught up: idle is not stalled
    assert check(100.0) is None and check(200.0) is None


STALL = "no records from the broker for 12s on core2.out at offset 2639 of 4960"


def test_a_stalled_pipeline_gateway_fails_its_pipelines_fast_and_recovers():
    gw = PipelineGateway(KafkaConfig(bootstrap="127.0.0.1:9"))
    reports = []
    gw.report = lambda *report: reports.append(report)
    gw.set_pipeline("chain", 3, None)
    gw.ready.add("chain")
    gw._todo.clear()

    gw._stalled(STALL)
    assert reports == [("chain", 3, False, STALL)]  # PipelineFailed, with the reason
    with pytest.raises(InferError) as err:  # a fast 503, not a wait for the timeout
        asyncio.run(gw.infer("chain", {"inputs": []}, "r1"))
    assert err.value.status == 503

    gw._stalled(None)  # answers flow again: the consume loop reports it Ready again
    assert gw._todo == {"chain"}


def test_a_stalled_engine_reports_its_pipelines_failed_once_then_ready_again():
    engine = Engine(KafkaConfig(bootstrap="127.0.0.1:9"), "http://127.0.0.1:9")
    reports = []
    engine.report = lambda *report: reports.append(report)
    engine.flow.set_plan(build_plan("chain", 3, PipelineSpec.model_validate(
        {"steps": [{"name": "add10"}], "output": {"steps": ["add10"]}})))
    engine._unready["chain"] = engine.flow.plans["chain"]
    guard = SimpleNamespace(down=threading.Event(), stall=None)
    engine.reader = SimpleNamespace(  # type: ignore[assignment]
        guard=guard, sub=SimpleNamespace(assigned={engine.cfg.pipeline_inputs("chain")}))
    engine._report_ready()
    assert reports == [("chain", 3, True, "")]

    guard.stall = STALL
    engine._report_ready()
    engine._report_ready()
    assert reports[1:] == [("chain", 3, False, STALL)]
    guard.stall = None
    engine._report_ready()
    assert reports[2:] == [("chain", 3, True, "")]
