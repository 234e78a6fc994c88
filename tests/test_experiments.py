"""Experiments, sticky routes, mirrors and rollouts through the real Envoy (issue 3)."""

import json
import re
import urllib.request
from collections import Counter

import pytest

from runtime.client import SchedulerError
from runtime.procs import wait_until
from tests.conftest import IRIS2_CLASS, IRIS_CLASS, SAMPLES
from tests.load import Load


def _start(env, name: str, **spec):
    env.scheduler.apply("Experiment", name, json.dumps(spec))
    return env.scheduler.wait("Experiment", name, timeout=30)


def _split(env, n: int, model: str = "iris", **kwargs) -> Counter:
    return Counter(env.predict_many(model, n, **kwargs))


@pytest.fixture
def two_models(make_env, sample_models):
    env = make_env()
    env.load_model("iris", sample_models / "iris")
    env.load_model("iris2", sample_models / "iris2")
    return env


@pytest.mark.parametrize("weights", [(50, 50), (90, 10)])
def test_weighted_split_over_2000_requests(two_models, weights):
    env = two_models
    _start(env, "ab", default="iris", candidates=[{"name": "iris", "weight": weights[0]},
                                                  {"name": "iris2", "weight": weights[1]}])
    counts = _split(env, 2000)
    share = counts[IRIS_CLASS] / 2000
    expected = weights[0] / sum(weights)
    assert abs(share - expected) <= 0.05, counts
    assert set(counts) == {IRIS_CLASS, IRIS2_CLASS}
    # Also addressable as <name>.experiment
    assert set(_split(env, 60, headers={"seldon-model": "ab.experiment"})) == \
        {IRIS_CLASS, IRIS2_CLASS}


def test_sticky_route(two_models):
    env = two_models
    _start(env, "ab", default="iris", candidates=[{"name": "iris", "weight": 1},
                                                  {"name": "iris2", "weight": 1}])
    for _ in range(2):  # whichever side the first request lands on, it stays there
        _status, body, headers = env.infer("iris")
        route = headers["x-seldon-route"]
        first = body["outputs"][0]["data"][0]
        answers = _split(env, 100, headers={"x-seldon-route": route})
        assert answers == Counter({first: 100}), route


def _server_count(env, internal: str) -> float:
    port = env.platform.replicas["mlserver-0"]["metrics"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = r'^model_infer_request_success_total\{model="' + internal + r'".*\} (\S+)$'
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def test_mirror_gets_a_copy_clients_see_only_main(two_models):
    env = two_models
    _start(env, "shadow", default="iris", candidates=[{"name": "iris", "weight": 1}],
           mirror={"name": "iris2", "percent": 100})
    before = (_server_count(env, "iris_1"), _server_count(env, "iris2_1"))
    assert _split(env, 300) == Counter({IRIS_CLASS: 300})
    wait_until(lambda: _server_count(env, "iris2_1") - before[1] >= 300, 10, "mirrored copies")
    assert _server_count(env, "iris_1") - before[0] == 300
    assert _server_count(env, "iris2_1") - before[1] == 300


def test_stop_experiment_restores_default_without_failures(two_models):
    env = two_models
    _start(env, "ab", default="iris", candidates=[{"name": "iris", "weight": 1},
                                                  {"name": "iris2", "weight": 1}])
    with Load(env.url, "iris") as load:
        wait_until(lambda: load.total > 200, 30, "load running")
        env.scheduler.delete("Experiment", "ab")
        wait_until(lambda: all(a == IRIS_CLASS for _, a, _ in load.answers[-100:]) and
                   len(load.answers) > 400, 30, "default route back")
    assert load.failures == [] and load.statuses["error"] == 0
    assert _split(env, 100) == Counter({IRIS_CLASS: 100})


def test_experiment_survives_scheduler_restart(two_models):
    env = two_models
    _start(env, "ab", default="iris", candidates=[{"name": "iris", "weight": 90},
                                                  {"name": "iris2", "weight": 10}])
    env.platform.kill("scheduler")
    env.platform.restart("scheduler")
    wait_until(lambda: env.scheduler.status("Server")[0].ready, 30, "agent reconnect")
    [status] = env.scheduler.status("Experiment", "ab")
    assert status.ready
    share = _split(env, 1000)[IRIS_CLASS] / 1000
    assert abs(share - 0.9) <= 0.05


def test_experiment_waits_for_missing_model_then_becomes_ready(two_models, sample_models):
    env = two_models
    env.scheduler.apply("Experiment", "later", json.dumps(
        {"candidates": [{"name": "iris", "weight": 1}, {"name": "iris3", "weight": 1}]}))
    [status] = env.scheduler.status("Experiment", "later")
    assert not status.ready and "iris3" in status.reason
    env.load_model("iris3", sample_models / "iris2")
    assert env.scheduler.wait("Experiment", "later", timeout=30).ready
    answers = _split(env, 60, headers={"seldon-model": "later.experiment"})
    assert set(answers) == {IRIS_CLASS, IRIS2_CLASS}


@pytest.mark.parametrize("spec, message", [
    ({"default": "iris", "candidates": [{"name": "iris2", "weight": 1}]}, "default"),
    ({"candidates": []}, "at least one candidate"),
    ({"candidates": [{"name": "iris", "weight": 1}, {"name": "iris", "weight": 2}]},
     "duplicate"),
    ({"candidates": [{"name": "iris", "weight": 0}]}, "weight"),
    ({"candidates": [{"name": "iris", "weight": 1}], "resourceType": "job"}, "resourceType"),
])
def test_invalid_experiments_are_refused(iris_env, spec, message):
    with pytest.raises(SchedulerError, match=message):
        iris_env.scheduler.apply("Experiment", "bad", json.dumps(spec))
    assert iris_env.scheduler.status("Experiment") == []


def test_one_experiment_per_default(two_models):
    env = two_models
    _start(env, "first", default="iris", candidates=[{"name": "iris", "weight": 1},
                                                     {"name": "iris2", "weight": 1}])
    with pytest.raises(SchedulerError, match="already the default of experiment 'first'"):
        env.scheduler.apply("Experiment", "second", json.dumps(
            {"default": "iris", "candidates": [{"name": "iris", "weight": 1}]}))


def test_rollout_under_load_has_no_failed_request(two_models, sample_models):
    env = two_models
    with Load(env.url, "iris") as load:
        wait_until(lambda: load.total > 200, 30, "load running")
        # Version 2 of "iris" answers like iris2
        env.load_model("iris", sample_models / "iris2")
        [status] = env.scheduler.status("Model", "iris")
        assert status.version == 2
        wait_until(lambda: [v.version for v in env.scheduler.status("Model", "iris")[0]
                            .versions] == [2], 30, "version 1 unloaded")
        mark = len(load.answers)
        wait_until(lambda: len(load.answers) > mark + 200, 30, "more load after rollout")
    assert load.failures == [] and load.statuses["error"] == 0, load.failures[:5]
    print(f"rollout under {load.rate:.0f} requests/s, {load.total} requests")
    assert load.rate > 150, f"only {load.rate:.0f} requests/s"  # a real, steady load
    assert {a for _, a, _ in load.answers[mark:]} == {IRIS2_CLASS}
    server = json.loads(env.scheduler.status("Server", "mlserver")[0].detail_json)
    assert "iris_1" not in server["replicas"][0]["models"]
    assert "iris_2" in server["replicas"][0]["models"]


def test_experiment_over_pipelines(make_env):
    env = make_env(pipelines=True)
    models = SAMPLES / "models"
    for name in ("add10", "mul10"):
        env.load_model(name, models / name, requirements=["mlserver"])
    chains = {"chain": ("add10", "mul10"), "chain2": ("mul10", "add10")}  # 1 -> 110 / 20
    for name, (first, second) in chains.items():
        env.scheduler.apply("Pipeline", name, json.dumps({
            "steps": [{"name": first}, {"name": second, "inputs": [first]}],
            "output": {"steps": [second]}}))
        env.scheduler.wait("Pipeline", name, timeout=60)
    _start(env, "pab", default="chain", resourceType="pipeline",
           candidates=[{"name": "chain", "weight": 1}, {"name": "chain2", "weight": 1}])
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                   "data": [1.0]}]}).encode()
    seen = Counter()
    for _ in range(40):
        status, reply, _headers = env.infer("", body=body, path="/v2/pipelines/chain/infer")
        assert status == 200, reply
        seen[reply["outputs"][0]["data"][0]] += 1
    assert set(seen) == {110.0, 20.0}, seen
    status, reply, _ = env.infer("", body=body, path="/v2/models/x/infer",
                                 headers={"seldon-model": "pab.experiment"})
    assert status == 200 and reply["outputs"][0]["data"][0] in (110.0, 20.0)
