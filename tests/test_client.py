"""The one scheduler client against a real local platform (scheduler, Envoy, MLServer +
agent): errors by gRPC status code, and waits that follow the WatchStatus stream."""

import json
import threading
import time

import grpc
import pytest

from runtime.client import (
    Failed,
    NotFound,
    Refused,
    SchedulerClient,
    TimedOut,
    Unavailable,
)
from runtime.pb import scheduler_pb2_grpc
from runtime.procs import free_port
from tests.conftest import platform_env, wait_for


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with platform_env(tmp_path_factory.mktemp("client"), {}) as env:
        yield env


@pytest.fixture
def client(env):
    c = SchedulerClient(env.platform.scheduler_address, timeout=30)
    yield c
    c.close()


def iris(sample_models, model: str = "iris") -> str:
    return json.dumps({"storageUri": str(sample_models / model), "requirements": ["sklearn"]})


class CountingCalls(grpc.UnaryUnaryClientInterceptor):
    """Counts the unary calls a client makes (a polling wait would make many)."""

    def __init__(self):
        self.count = 0

    def intercept_unary_unary(self, continuation, details, request):
        self.count += 1
        return continuation(details, request)


def test_a_missing_resource_is_not_found_by_its_status_code(client):
    with pytest.raises(NotFound, match=r"^Model nope not found$"):
        client.status("Model", "nope")
    assert client.get("Model", "nope") is None
    with pytest.raises(NotFound, match="Model nope"):
        client.wait("Model", "nope", timeout=30)
    assert client.wait("Model", "nope", until="gone", timeout=30) is None


def test_a_refused_spec_is_invalid_and_names_the_resource(client):
    with pytest.raises(Refused) as err:
        client.apply("Model", "bad", json.dumps({"storageUri": "x", "replicas": -1}))
    assert err.value.invalid and err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(err.value).startswith("Model bad: spec.replicas") and "INVALID_ARGUMENT" in str(
        err.value)
    with pytest.raises(Refused, match=r"Model gpu: .*tensorflow.*FAILED_PRECONDITION") as err:
        client.apply("Model", "gpu", json.dumps({"storageUri": "x",
                                                 "requirements": ["tensorflow"]}))
    assert err.value.invalid


def test_an_unreachable_scheduler_is_named_at_once():
    address = f"127.0.0.1:{free_port()}"
    c = SchedulerClient(address, timeout=5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"scheduler not reachable at {address}"):
        c.status("Model")
    with pytest.raises(Unavailable, match="not reachable"):  # a wait does not sit it out
        c.wait("Model", "iris", timeout=60)
    assert time.monotonic() - started < 20
    c.close()


def test_wait_returns_on_the_stream_not_by_polling(client, env, sample_models):
    counter = CountingCalls()
    client.stub = scheduler_pb2_grpc.SchedulerStub(grpc.intercept_channel(client.channel,
                                                                          counter))
    # an independent watcher notes when the scheduler publishes iris as available
    published: list[float] = []
    watcher = SchedulerClient(env.platform.scheduler_address)

    def watch() -> None:
        for s in watcher.watch("Model", "iris", timeout=120):
            if s.ready:
                published.append(time.monotonic())
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    applied = client.apply("Model", "iris", iris(sample_models))
    counter.count = 0
    seen: list[str] = []
    started = time.monotonic()
    s = client.wait("Model", "iris", timeout=120, version=applied.version,
                    progress=lambda s: seen.append(s.state))
    returned = time.monotonic()
    t.join(30)
    watcher.close()
    assert s.ready and s.state == "ModelAvailable" and seen[-1] == "ModelAvailable"
    assert published, "the independent watch saw no ready status"
    # reported as soon as the scheduler published it (a 0.1 s poll would lag up to 0.1 s
    # and make a Status call per 0.1 s of loading)
    assert returned - published[0] < 0.5, returned - published[0]
    assert counter.count <= 2, f"{counter.count} unary calls in {returned - started:.1f}s"
    # a named state, already reached: returns at once
    assert client.wait("Model", "iris", until="ModelAvailable", timeout=10).ready


def test_wait_fails_with_the_schedulers_reason(client, tmp_path):
    client.apply("Model", "broken", json.dumps({
        "storageUri": str(tmp_path / "no-such-model"), "requirements": ["sklearn"]}))
    with pytest.raises(Failed, match=r"Model broken: ModelFailed: .*no-such-model"):
        client.wait("Model", "broken", timeout=120)
    client.delete("Model", "broken")
    gone = client.wait("Model", "broken", until="gone", timeout=120)
    assert gone is None or gone.state == "ModelTerminated"


def test_wait_gone_after_delete(client, sample_models):
    client.apply("Model", "iris2", iris(sample_models, "iris2"))
    client.wait("Model", "iris2", timeout=120)
    client.delete("Model", "iris2")
    gone = client.wait("Model", "iris2", until="gone", timeout=120)
    assert gone is None or gone.state == "ModelTerminated"
    after = client.get("Model", "iris2")
    assert after is None or after.state == "ModelTerminated"


def test_a_retried_state_fails_only_after_its_grace(client):
    spec = json.dumps({"default": "iris", "candidates": [{"name": "iris", "weight": 1},
                                                         {"name": "ghost", "weight": 1}]})
    client.apply("Experiment", "ab", spec)
    try:
        started = time.monotonic()
        with pytest.raises(Failed, match=r"Experiment ab: ExperimentWaiting: .*ghost"):
            client.wait("Experiment", "ab", timeout=60, retry_grace=2)
        # the grace ran out with no new status on the stream: failed at its end, not later
        assert 2 <= time.monotonic() - started < 10
        # without a grace the CLI's rule: waited through until the deadline
        with pytest.raises(TimedOut, match=r"not ready after 2s \(last state: "
                                           r"ExperimentWaiting: .*ghost"):
            client.wait("Experiment", "ab", timeout=2)
    finally:
        client.delete("Experiment", "ab")


def test_a_wait_outlives_a_scheduler_restart(client, env, sample_models):
    client.apply("Model", "iris", iris(sample_models))
    client.wait("Model", "iris", timeout=120)
    spec = json.dumps({"default": "iris", "candidates": [{"name": "iris", "weight": 1},
                                                         {"name": "later", "weight": 1}]})
    client.apply("Experiment", "ab2", spec)
    result: list = []
    watching = threading.Event()
    waiter = threading.Thread(target=lambda: result.append(client.wait(
        "Experiment", "ab2", timeout=180, progress=lambda s: watching.set())), daemon=True)
    waiter.start()
    # a long-lived follower (as the controller's) sees the stream lost, then back
    events: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=client.follow, daemon=True, args=(
        "Experiment", lambda s: None, stop, lambda: events.append("connected"),
        lambda e: events.append("lost")))
    follower.start()
    try:
        assert watching.wait(30), "the wait saw no status"
        wait_for(lambda: events == ["connected"], 30, "the follower connected")
        env.platform.kill("scheduler")  # the streams break
        env.platform.restart("scheduler")  # state restored from its store
        # a client that reached the scheduler before rides out its reconnect back-off
        client.apply("Model", "later", iris(sample_models))
        waiter.join(180)
        assert result and result[0].ready and result[0].state == "ExperimentReady"
        wait_for(lambda: events == ["connected", "lost", "connected"], 30, "reconnected")
        stop.set()
        client.cancel_streams()
        follower.join(10)
        assert not follower.is_alive(), "follow() did not end on stop"
    finally:
        stop.set()
        client.cancel_streams()
        follower.join(10)
        client.delete("Experiment", "ab2")
        client.delete("Model", "later")
