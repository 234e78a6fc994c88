"""Placement: requirements against server capabilities, refusal of requirements no server
offers, ScheduleFailed, retry on server join."""

import json

import pytest

from runtime.client import SchedulerError
from runtime.local.config import LocalServer
from tests.conftest import IRIS_CLASS


def _server_of(env, model: str) -> str:
    [status] = env.scheduler.status("Model", model)
    return status.versions[0].server


def test_models_land_where_requirements_are_met(make_env, sample_models):
    env = make_env([LocalServer(name="alpha", capabilities=["sklearn", "gpu-a"]),
                    LocalServer(name="beta", capabilities=["sklearn", "gpu-b"])])
    env.load_model("on-a", sample_models / "iris", requirements=["sklearn", "gpu-a"])
    env.load_model("on-b", sample_models / "iris", requirements=["sklearn", "gpu-b"])
    assert _server_of(env, "on-a") == "alpha"
    assert _server_of(env, "on-b") == "beta"
    assert env.predict("on-a") == IRIS_CLASS and env.predict("on-b") == IRIS_CLASS

    # No server offers "tpu": refused at load (FAILED_PRECONDITION) with each server's lack,
    # as Seldon's scheduler does; nothing is left behind.
    with pytest.raises(SchedulerError) as refused:
        env.load_model("needs-tpu", sample_models / "iris", requirements=["sklearn", "tpu"])
    assert refused.value.invalid
    assert str(refused.value) == ("Model needs-tpu: spec.requirements: no server offers "
                                  "sklearn, tpu (alpha lacks tpu; beta lacks tpu) "
                                  "(FAILED_PRECONDITION)")
    assert env.scheduler.get("Model", "needs-tpu") is None
    # A server that is not connected yet counts once known (by its Server spec or an agent):
    # pinned to a server the scheduler has never seen, the model is accepted and waits.
    env.load_model("pinned-later", sample_models / "iris", wait=False, server="gamma",
                   requirements=["sklearn", "tpu"])
    [status] = env.scheduler.status("Model", "pinned-later")
    assert status.state == "ScheduleFailed" and "gamma" in status.reason
    status_code, body, _ = env.infer("pinned-later")
    assert status_code == 404 and "error" in body

    # The server joins: the waiting model is placed, and "tpu" is now accepted.
    env.platform.add_server(LocalServer(name="gamma", capabilities=["sklearn", "tpu"]))
    env.scheduler.wait("Model", "pinned-later", timeout=60)
    env.load_model("needs-tpu", sample_models / "iris", requirements=["sklearn", "tpu"])
    assert _server_of(env, "needs-tpu") == _server_of(env, "pinned-later") == "gamma"
    assert env.predict("needs-tpu") == IRIS_CLASS


def test_pinned_server_and_replicas(make_env, sample_models):
    env = make_env([LocalServer(name="one", replicas=1),
                    LocalServer(name="two", replicas=2)])
    env.load_model("pinned", sample_models / "iris", server="one")
    assert _server_of(env, "pinned") == "one"
    # Two replicas only fit on server "two"
    env.load_model("twice", sample_models / "iris", replicas=2)
    [status] = env.scheduler.status("Model", "twice")
    assert status.versions[0].server == "two"
    assert status.versions[0].available_replicas == 2
    # Three replicas fit nowhere ...
    env.load_model("thrice", sample_models / "iris", wait=False, replicas=3)
    [status] = env.scheduler.status("Model", "thrice")
    assert status.state == "ScheduleFailed", status
    # the reason names, per server, the placement rule it failed
    assert status.reason == ("server one [replicas]: 1 of 3 replica(s) needed connected; "
                             "server two [replicas]: 2 of 3 replica(s) needed connected")
    # ... unless partial scheduling is allowed with minReplicas.
    env.load_model("partial", sample_models / "iris", replicas=3, minReplicas=1)
    [status] = env.scheduler.status("Model", "partial")
    assert status.versions[0].available_replicas == 2
    assert "2 of 3" in status.reason
    server = json.loads(env.scheduler.status("Server", "two")[0].detail_json)
    assert all("twice_1" in r["models"] for r in server["replicas"])
