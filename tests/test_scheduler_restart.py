"""The scheduler is not on the data path, and its state survives a crash."""

from runtime.procs import wait_until
from tests.conftest import IRIS2_CLASS, IRIS_CLASS


def _loads_in_server_log(env, internal: str) -> int:
    log = env.platform.services["mlserver-0-mlserver"].log_path.read_text()
    return log.count(f"Loaded model '{internal}' successfully")


def _snapshot(env):
    return [(s.name, s.version, s.state, [(v.version, v.state, v.server) for v in s.versions])
            for s in env.scheduler.status("Model")]


def test_kill_9_scheduler_keeps_serving_and_restores_state(make_env, sample_models):
    env = make_env()
    env.load_model("iris", sample_models / "iris")
    env.load_model("iris2", sample_models / "iris2")
    before = _snapshot(env)
    loads = {m: _loads_in_server_log(env, f"{m}_1") for m in ("iris", "iris2")}
    assert loads == {"iris": 1, "iris2": 1}

    env.platform.kill("scheduler")
    for _ in range(50):  # Envoy serves from its last configuration
        assert env.predict("iris") == IRIS_CLASS
        assert env.predict("iris2") == IRIS2_CLASS

    env.platform.restart("scheduler")
    # Agents reconnect; the scheduler reports the same models, versions and states.
    wait_until(lambda: env.scheduler.status("Server")[0].ready, 30, "agent reconnect")
    assert _snapshot(env) == before
    assert env.predict("iris") == IRIS_CLASS and env.predict("iris2") == IRIS2_CLASS
    assert {m: _loads_in_server_log(env, f"{m}_1") for m in loads} == loads  # nothing reloaded

    # And it still manages them: a new model after the restart loads and serves.
    env.load_model("iris3", sample_models / "iris")
    assert env.predict("iris3") == IRIS_CLASS
