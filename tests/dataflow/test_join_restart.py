"""At-least-once through a join: the engine is killed -9 while a join holds half of a request's
inputs (only in its memory) and the other half's model call is still in flight. The request's
input record was not committed, so the restarted engine reads it again, and the caller, still
waiting, gets the joined answer."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import Consumer, TopicPartition

from runtime.dataflow.engine import GROUP
from runtime.procs import wait_until
from tests.dataflow.conftest import (
    outputs_of,
    running_broker,
    running_dataflow,
    running_scheduler,
    tensor,
)
from tests.dataflow.test_model_server_crash import OutputReader
from tests.dataflow.test_shutdown import HeldModels

broker = pytest.fixture(scope="module", name="broker")(running_broker)
scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)
AUTO_COMMIT_S = 0.2  # runtime.kafka: auto.commit.interval.ms of the engine's consumer


@pytest.fixture(scope="module")
def held(mlserver):
    proxy = HeldModels(mlserver, only="mul10")   # add10 answers, mul10 waits when held
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def dataflow(logs, scheduler, broker, held):
    held.release()
    yield from running_dataflow(logs, scheduler, broker, held.url)


def test_a_join_holding_half_its_inputs_completes_after_an_engine_kill(dataflow, held):
    cfg = dataflow.kafka
    assert outputs_of(dataflow.infer("join", [tensor("x", [1.0])])) == {"SUM": [21.0]}
    inputs = TopicPartition(cfg.pipeline_inputs("join"), 0)
    offsets = Consumer(cfg.consumer(GROUP))  # reads the engine group's commits, never joins
    add10 = OutputReader(cfg, cfg.model_outputs("add10"))

    def committed() -> int:
        return offsets.committed([inputs], timeout=10)[0].offset

    held.hold()
    seen = held.seen
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(dataflow.infer, "join", [tensor("x", [2.0])], 90,
                                  **{"seldon-timeout-ms": "80000"})
            wait_until(lambda: held.seen > seen and add10.poll() >= 1, 30,
                       "add10 answered (held by the join) and mul10's call in flight")
            position = offsets.get_watermark_offsets(inputs, timeout=10)[1] - 1
            time.sleep(5 * AUTO_COMMIT_S)  # time for a wrong commit to happen, if it would
            assert committed() <= position, "a request held by a join was committed"
            dataflow.services["engine"].kill()
            dataflow.start("engine")
            held.release()
            answer = pending.result()
        assert outputs_of(answer) == {"SUM": [32.0]}
        wait_until(lambda: committed() > position, 30, "its offset committed once answered")
    finally:
        held.release()
        dataflow.start("engine")
        add10.close()
        offsets.close()
