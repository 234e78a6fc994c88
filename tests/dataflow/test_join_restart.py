"""At-least-once through a join: the engine is killed -9 while a join holds half of a request's
inputs (only in its memory). The held record's offset was not committed, so the restarted
engine reads it again and the request completes when the other half arrives."""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runtime.dataflow.engine import GROUP
from runtime.kafka import H_PIPELINE, H_STEP
from runtime.procs import wait_until
from tests.dataflow.conftest import (
    outputs_of,
    running_broker,
    running_dataflow,
    running_scheduler,
    tensor,
)
from tests.dataflow.test_model_server_crash import OutputReader

broker = pytest.fixture(scope="module", name="broker")(running_broker)
scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)
dataflow = pytest.fixture(scope="module", name="dataflow")(running_dataflow)
AUTO_COMMIT_S = 0.2  # runtime.kafka: auto.commit.interval.ms of the engine's consumer


def test_a_join_holding_half_its_inputs_completes_after_an_engine_kill(dataflow):
    cfg = dataflow.kafka
    assert outputs_of(dataflow.infer("join", [tensor("x", [1.0])])) == {"SUM": [21.0]}
    producer = Producer(cfg.producer())
    joined, chained = OutputReader(cfg, cfg.pipeline_outputs("join")), \
        OutputReader(cfg, cfg.pipeline_outputs("chain"))
    offsets = Consumer(cfg.consumer(GROUP))  # reads the engine group's commits, never joins
    add10_out = cfg.model_outputs("add10")
    positions: dict[str, int] = {}

    def model_output(step: str, pipeline: str, key: str, value: float) -> None:
        def delivered(err, msg) -> None:
            assert err is None, err
            positions[key] = msg.offset()

        producer.produce(cfg.model_outputs(step), key=key, on_delivery=delivered,
                         value=json.dumps({"outputs": [tensor("OUTPUT", [value])]}).encode(),
                         headers=[(H_PIPELINE, pipeline), (H_STEP, step)])
        assert producer.flush(10) == 0

    def committed() -> int:
        return offsets.committed([TopicPartition(add10_out, 0)], timeout=10)[0].offset

    half, after = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        model_output("add10", "join", half, 11.0)    # sum2's A for `half`: held by the join
        model_output("add10", "chain", after, 11.0)  # a later record that completes (chain)
        wait_until(lambda: chained.poll() and after in chained.seen, 30,
                   "the later record's answer")
        time.sleep(5 * AUTO_COMMIT_S)  # time for a wrong commit to happen, if it would
        assert committed() <= positions[half], "a record held by a join was committed"
        dataflow.services["engine"].kill()
        dataflow.start("engine")
        model_output("mul10", "join", half, 10.0)    # sum2's B, after the restart
        wait_until(lambda: joined.poll() and half in joined.seen, 60,
                   "the join completing after the restart")
        assert joined.seen[half]["outputs"][0]["data"] == [21.0]
        wait_until(lambda: committed() > positions[after], 30, "offsets committed again")
    finally:
        dataflow.start("engine")
        for c in (joined, chained):
            c.close()
        offsets.close()
