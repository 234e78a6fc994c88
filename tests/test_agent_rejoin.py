"""An agent that comes back after its grace period (replicaLostAfterSeconds): the replica was
forgotten and its models were left ScheduleFailed; on reconnect they are placed back and
Envoy serves them again, with no other action."""

import time

from tests.conftest import IRIS_CLASS, wait_for

LOST_AFTER_S = 2.0


def _state(env, model: str):
    [status] = env.scheduler.status("Model", model)
    return status


def test_agent_back_after_the_grace_period_gets_its_models_back(make_env, sample_models):
    env = make_env(replicaLostAfterSeconds=LOST_AFTER_S)
    for name in ("iris", "iris2"):
        env.load_model(name, sample_models / name)

    # Only the agent dies: the model server keeps both models loaded.
    env.platform.kill("mlserver-0-agent")
    for name in ("iris", "iris2"):
        status = wait_for(lambda n=name: (s := _state(env, n)).state == "ScheduleFailed" and s,
                           30, f"{name} to be ScheduleFailed once the replica is lost")
        assert "lost" in status.reason

    # It comes back (late): both models are placed on it again and served through Envoy.
    back_at = time.monotonic()
    env.platform.restart("mlserver-0-agent")
    for name in ("iris", "iris2"):
        wait_for(lambda n=name: _state(env, n).state == "ModelAvailable", 30,
                  f"{name} to be ModelAvailable after the agent rejoined")
    took = time.monotonic() - back_at
    print(f"models Available {took:.1f}s after the agent restarted")
    assert env.predict("iris") == IRIS_CLASS
    assert env.predict("iris2") != IRIS_CLASS
    [status] = env.scheduler.status("Model", "iris")
    assert [r.replica for r in status.versions[0].replicas] == [0]


def test_a_replica_back_after_the_grace_period_restores_the_replica_count(make_env,
                                                                          sample_models):
    from runtime.local.config import LocalServer

    env = make_env([LocalServer(name="mlserver", replicas=2)],
                   replicaLostAfterSeconds=LOST_AFTER_S)
    env.load_model("iris", sample_models / "iris", replicas=2)

    def replicas():
        return sorted(r.replica for r in _state(env, "iris").versions[0].replicas)

    assert replicas() == [0, 1]
    env.platform.kill("mlserver-0-agent")
    # Lost: iris keeps serving from replica 1 alone (nothing else can take the second copy).
    wait_for(lambda: replicas() == [1], 30, "replica 0 to be forgotten")
    assert env.predict("iris") == IRIS_CLASS

    env.platform.restart("mlserver-0-agent")
    wait_for(lambda: replicas() == [0, 1] and _state(env, "iris").state == "ModelAvailable",
              30, "iris to be placed back on replica 0")
    [status] = env.scheduler.status("Model", "iris")
    assert status.versions[0].available_replicas == 2
    assert env.predict_many("iris", 20) == [IRIS_CLASS] * 20
