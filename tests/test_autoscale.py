"""Autoscaling with real processes (scheduler, Envoy, MLServer, agents): a Model with
minReplicas 1 / maxReplicas 3 grows under load and shrinks when it stops; a Server scales in
only after its leaving replica's models are Available elsewhere, and out when a model needs
more replicas than it has. No request fails meanwhile. Thresholds and cool-downs are small
here so the test is quick; the defaults are in runtime.scheduler.autoscale.AutoscaleConfig."""

import json
import threading
import time
import urllib.request

from runtime.cli.seldon_status import render
from runtime.local.config import LocalAutoscaling, LocalConfig, LocalServer
from runtime.local.platform import Platform
from runtime.local.supervisor import Supervisor
from tests.conftest import IRIS2_CLASS, Env, free_ports, wait_for
from tests.load import Load
from tests.test_drain import Traffic

FAST = dict(scaleUpInFlight=0.1, scaleDownInFlight=0.04, scaleUpCooldownSeconds=2,
            scaleDownDelaySeconds=3, loadReportSeconds=1, reportStaleSeconds=5)


def _model(env, name: str) -> tuple[dict[int, str], dict]:
    [s] = env.scheduler.status("Model", name)
    v = s.versions[0]
    detail = json.loads(s.detail_json or "{}").get("autoscaling", {})
    return {r.replica: r.state for r in v.replicas}, {"state": s.state, **detail}


def _available(env, name: str, n: int):
    replicas, detail = _model(env, name)
    available = [i for i, state in replicas.items() if state == "Available"]
    return detail if len(available) == n == len(replicas) else None


def _metrics(env) -> str:
    url = f"http://127.0.0.1:{env.platform.ports['schedulerMetrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_a_model_grows_to_three_replicas_under_load_and_back_to_one(make_env,
                                                                      sample_models):
    env = make_env([LocalServer(name="mlserver", replicas=3)],
                   autoscaling=LocalAutoscaling(**FAST))
    env.load_model("iris", sample_models / "iris", minReplicas=1, maxReplicas=3)
    assert _available(env, "iris", 1)

    # A trickle throughout (it must not fail while replicas come and go), and a load ramp.
    trickle = Traffic(env.url, pause=0.1)
    trickle.start()
    with Load(env.url, "iris", threads=4) as ramp:
        grown = wait_for(lambda: _available(env, "iris", 3), 120, "iris on 3 replicas")
        took = time.monotonic() - ramp.started
        # `core2 model status` (Seldon's document) shows the autoscaler's count and reason
        doc = render(env.scheduler.status("Model", "iris")[0])
        served = ramp.total
        wait_for(lambda: ramp.total > served + 100, 30, "traffic on 3 replicas")
    print(f"load start to 3 replicas serving: {took:.1f}s")
    assert grown["state"] == "ModelAvailable" and grown["replicas"] == 3
    assert "requests in flight" in grown["reason"] and grown["reason"].startswith("up:")
    assert doc["versions"][0]["modelDefn"]["deploymentSpec"]["replicas"] == 3
    assert doc["autoscaling"]["replicas"] == 3 and doc["autoscaling"]["reason"].startswith("up:")

    # The load stops; the trickle goes on. One replica at a time goes, each unrouted first.
    shrunk = wait_for(lambda: _available(env, "iris", 1), 120, "iris back on 1 replica")
    trickle.stop()
    assert shrunk["replicas"] == 1 and shrunk["reason"].startswith("down:"), shrunk
    assert not ramp.failures and trickle.failed == 0, (ramp.failures + trickle.errors)[:5]
    assert trickle.ok > 0 and ramp.statuses[200] > 0

    text = _metrics(env)
    assert 'core2_model_autoscale_replicas{model="iris"} 1.0' in text
    assert 'core2_model_autoscale_total{direction="up",model="iris",reason="load"} 2.0' in text
    assert 'core2_model_autoscale_total{direction="down",model="iris",reason="idle"} 2.0' \
        in text


class Supervised:
    """A platform under its supervisor (which follows the server autoscaler), in a thread."""

    def __init__(self, run_dir, config: LocalConfig):
        self.supervisor = Supervisor(Platform(run_dir, config), log=lambda _m: None)
        self.supervisor.start()
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.thread.start()
        self.env = Env(self.supervisor.platform)

    def close(self) -> None:
        self.supervisor.stop()
        self.thread.join(10)
        self.supervisor.shutdown()


def _server(env) -> tuple[dict[int, list[str]], dict]:
    [s] = env.scheduler.status("Server", "mlserver")
    detail = json.loads(s.detail_json)
    return ({r["replica"]: r["models"] for r in detail["replicas"]},
            detail.get("autoscaling", {}))


def test_a_server_scales_in_after_moving_its_models_and_out_when_a_model_needs_it(
        tmp_path, sample_models):
    server = LocalServer(name="mlserver", replicas=2, minReplicas=2, maxReplicas=2,
                         memory="200M")
    run = Supervised(tmp_path / "run", LocalConfig(
        ports=free_ports(), pipelines=False, servers=[server],
        autoscaling=LocalAutoscaling(servers=True, serverCooldownSeconds=2, **FAST)))
    try:
        env = run.env
        env.load_model("iris", sample_models / "iris", memory="50M")
        env.load_model("iris2", sample_models / "iris2", memory="50M")
        replicas, _ = _server(env)
        assert replicas == {0: ["iris_1"], 1: ["iris2_1"]}  # most free memory first
        traffic = Traffic(env.url, model="iris2", expect=IRIS2_CLASS)
        traffic.start()
        wait_for(lambda: traffic.ok >= 20, 30, "traffic to iris2")

        # The floor goes down to one replica: both models fit on replica 0, so replica 1
        # is drained (iris2 Available on 0 first) and then stopped.
        spec = server.model_dump(exclude={"name", "fetch"}, exclude_none=True)
        env.scheduler.apply("Server", "mlserver", json.dumps({**spec, "minReplicas": 1}))
        platform = run.supervisor.platform
        wait_for(lambda: _server(env)[0] == {0: ["iris2_1", "iris_1"]} and
                 platform.running_replicas("mlserver") == [0], 90,
                 "iris2 moved and replica 1 stopped")
        _, scaling = _server(env)
        assert scaling["replicas"] == 1 and "mlserver/1 drained" in scaling["reason"]
        before = traffic.ok
        wait_for(lambda: traffic.ok >= before + 20, 30, "traffic after the scale-in")
        traffic.stop()
        assert traffic.failed == 0, traffic.errors[:5]

        # A model now wants two replicas: the server grows to two, and iris gets both.
        env.load_model("iris", sample_models / "iris", memory="50M", replicas=2, wait=False)
        wait_for(lambda: _available(env, "iris", 2), 120, "iris on 2 replicas")
        assert platform.running_replicas("mlserver") == [0, 1]
        _, scaling = _server(env)
        assert scaling["replicas"] == 2 and "iris wants 2 replicas" in scaling["reason"]
    finally:
        run.close()
