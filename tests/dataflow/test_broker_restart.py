"""Recovery after the broker restarts (the embedded broker keeps topics in memory, so they all
vanish): pipelines answer again with no manual step."""

import time

import pytest

from runtime.broker import start_broker
from runtime.procs import free_port, wait_until
from tests.dataflow.conftest import outputs_of, running_dataflow, running_scheduler, tensor

scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)


@pytest.fixture(scope="module")
def restartable_broker(logs):
    port = free_port()
    holder = {"svc": start_broker(logs, port)[0]}
    try:
        yield holder, port
    finally:
        holder["svc"].stop()


@pytest.fixture(scope="module")
def dataflow(logs, scheduler, restartable_broker, mlserver):
    _, port = restartable_broker
    yield from running_dataflow(logs, scheduler, f"127.0.0.1:{port}", mlserver)


def answers(dataflow) -> bool:
    r = dataflow.infer("chain", [tensor("x", [1.0])], timeout=10,
                       **{"seldon-timeout-ms": "3000"})
    return r.status_code == 200 and outputs_of(r) == {"OUTPUT": [110.0]}


def test_pipelines_answer_again_after_a_broker_restart(dataflow, restartable_broker, logs):
    holder, port = restartable_broker
    assert answers(dataflow)
    holder["svc"].kill()
    start = time.monotonic()
    holder["svc"] = start_broker(logs, port)[0]
    wait_until(lambda: answers(dataflow), 60, "chain answering after the broker restart")
    print(f"chain answered {time.monotonic() - start:.1f}s after the broker restart")
    assert all(s.alive() for s in dataflow.services.values())
    for i in range(5):  # and keeps answering
        assert outputs_of(dataflow.infer("chain", [tensor("x", [float(i)])])) == {
            "OUTPUT": [(i + 10.0) * 10]}
