"""Recovery after the broker restarts: pipelines answer again with no manual step. The
embedded broker keeps topics in memory, so they all vanish and the services create them
again; Apache Kafka keeps its topics and records on disk, so the services resume them."""

import time
import uuid

import pytest

from runtime.broker import start_kafka
from runtime.cli.inspect import read_records
from runtime.procs import free_port, wait_until
from tests.dataflow.conftest import (
    BROKER_KIND_OF,
    outputs_of,
    running_dataflow,
    running_scheduler,
    tensor,
)

scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)


@pytest.fixture(scope="module")
def restartable_broker(logs, broker_kind):
    port = free_port()
    holder = {"svc": start_kafka(broker_kind, logs, port)[0]}
    BROKER_KIND_OF[f"127.0.0.1:{port}"] = broker_kind
    try:
        yield holder, port
    finally:
        holder["svc"].stop()


@pytest.fixture(scope="module")
def dataflow(logs, scheduler, restartable_broker, mlserver):
    _, port = restartable_broker
    yield from running_dataflow(logs, scheduler, f"127.0.0.1:{port}", mlserver)


def answers(dataflow, rid: str | None = None) -> bool:
    r = dataflow.infer("chain", [tensor("x", [1.0])], timeout=10,
                       **{"seldon-timeout-ms": "3000", "x-request-id": rid or uuid.uuid4().hex})
    return r.status_code == 200 and outputs_of(r) == {"OUTPUT": [110.0]}


def answered_before(dataflow, rid: str) -> bool:
    """The pipeline's output record of request `rid` is still on its output topic."""
    cfg = dataflow.kafka
    return bool(read_records(cfg, [cfg.pipeline_outputs("chain")], "chain", request_id=rid,
                             timeout=5))


def test_pipelines_answer_again_after_a_broker_restart(dataflow, restartable_broker, logs,
                                                       broker_kind):
    holder, port = restartable_broker
    before = uuid.uuid4().hex
    # (the first request on a fresh broker may take longer than the 3 s asked: retried)
    wait_until(lambda: answers(dataflow, before), 60, "chain answering before the restart")
    assert answered_before(dataflow, before)
    holder["svc"].kill()
    start = time.monotonic()
    holder["svc"] = start_kafka(broker_kind, logs, port)[0]
    wait_until(lambda: answers(dataflow), 60, "chain answering after the broker restart")
    print(f"chain answered {time.monotonic() - start:.1f}s after the {broker_kind} broker "
          "restart")
    assert all(s.alive() for s in dataflow.services.values())
    for i in range(5):  # and keeps answering
        assert outputs_of(dataflow.infer("chain", [tensor("x", [float(i)])])) == {
            "OUTPUT": [(i + 10.0) * 10]}
    # what the broker kept: Apache Kafka its records (killed -9, yet acks=1 records were
    # written to its log), the embedded broker nothing
    assert answered_before(dataflow, before) == (broker_kind == "apache")
