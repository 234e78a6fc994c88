"""A server replica that goes away: its models move to the replicas left, or wait
(ScheduleFailed, with the reason) until one comes back."""

import json
import time

from runtime.local.config import LocalServer
from tests.conftest import IRIS_CLASS, wait_for

LOST_AFTER_S = 2.0


def _version(env, model: str):
    [status] = env.scheduler.status("Model", model)
    return status, status.versions[0]


def _kill_replica(env, idx: int) -> None:
    for part in ("agent", "mlserver"):
        env.platform.kill(f"mlserver-{idx}-{part}")


def test_models_move_off_a_lost_replica_and_wait_for_one_to_return(make_env, sample_models):
    env = make_env([LocalServer(name="mlserver", replicas=2)],
                   replicaLostAfterSeconds=LOST_AFTER_S)
    env.load_model("iris", sample_models / "iris")
    _, v = _version(env, "iris")
    [first] = [r.replica for r in v.replicas]
    other = 1 - first

    # The replica dies (model server and agent): once it is declared lost, iris loads on the
    # other replica and answers through Envoy again.
    _kill_replica(env, first)
    lost_at = time.monotonic()

    def moved():
        status, v = _version(env, "iris")
        return status.state == "ModelAvailable" and [r.replica for r in v.replicas] == [other]

    wait_for(moved, 60, f"iris to move to replica {other}")
    assert time.monotonic() - lost_at >= LOST_AFTER_S
    assert env.predict("iris") == IRIS_CLASS
    server = json.loads(env.scheduler.status("Server", "mlserver")[0].detail_json)
    assert [r["replica"] for r in server["replicas"]] == [other]

    # The last replica dies too: nothing can hold iris, and status says why.
    _kill_replica(env, other)

    def failed():
        status, _ = _version(env, "iris")
        return status if status.state == "ScheduleFailed" else None

    status = wait_for(failed, 30, "iris to be ScheduleFailed")
    assert "lost" in status.reason and "no server replica is connected" in status.reason
    code, body, _ = env.infer("iris")
    assert code in (404, 503) and "error" in body

    # A replica comes back: iris is placed on it and serves again.
    for part in ("mlserver", "agent"):
        env.platform.restart(f"mlserver-{first}-{part}")
    env.scheduler.wait("Model", "iris", timeout=60)
    assert env.predict("iris") == IRIS_CLASS


def test_an_agent_back_within_the_grace_period_keeps_its_models(make_env, sample_models):
    env = make_env(replicaLostAfterSeconds=30)
    env.load_model("iris", sample_models / "iris")
    env.platform.restart("mlserver-0-agent")
    wait_for(lambda: json.loads(env.scheduler.status("Server", "mlserver")[0].detail_json)
              ["replicas"][0]["connected"], 30, "the agent to reconnect")
    status, v = _version(env, "iris")
    assert status.state == "ModelAvailable" and [r.replica for r in v.replicas] == [0]
    assert env.predict("iris") == IRIS_CLASS
    log = (env.platform.logs / "mlserver-0-mlserver.log").read_text()
    assert log.count("Loaded model 'iris_1' successfully") == 1, "iris was reloaded"
