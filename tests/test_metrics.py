"""Metrics under Seldon's names on a real local platform: the agent translates MLServer's
per-model counters into seldon_model_* series, keeps them monotonic when MLServer restarts,
and every metric the Grafana dashboard plots is served by some running service."""

import json
import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from components.dashboard import DASHBOARD
from runtime.agent.metrics import parse_server_metrics
from runtime.local.config import LocalConfig
from runtime.local.platform import Platform
from runtime.procs import wait_until
from tests.conftest import Env, free_ports

N_OK, N_BAD = 25, 3
IRIS = {"model": "iris", "model_internal": "iris_1", "server": "mlserver",
        "server_replica": "0"}
REPLICA = {"server": "mlserver", "server_replica": "0"}
PIPELINE_INPUT = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_models):
    """One platform with pipelines for the whole module: iris (model traffic) and a pipeline
    over add10 (so pipeline traffic never touches iris's counts)."""
    cfg = LocalConfig(ports=free_ports(), pipelines=True)
    platform = Platform(tmp_path_factory.mktemp("metrics"), cfg).start()
    try:
        env = Env(platform)
        env.load_model("iris", sample_models / "iris")
        env.load_model("add10", sample_models / "add10", requirements=["mlserver"])
        env.scheduler.apply("Pipeline", "plus", json.dumps(
            {"steps": [{"name": "add10"}], "output": {"steps": ["add10"]}}))
        env.scheduler.wait("Pipeline", "plus", timeout=90)
        yield env
    finally:
        platform.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def agent_port(env) -> int:
    return env.platform.replicas["mlserver-0"]["agent_metrics"]


def samples(text: str) -> list:
    """Parsed samples, named exactly as Prometheus stores them: the parser appends _total to
    counter samples that lack it (seldon_cache_evict_count), so names are checked against the
    text."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_total") and not re.search(rf"^{s.name}[{{ ]", text, re.M):
                s = s._replace(name=s.name.removesuffix("_total"))
            out.append(s)
    return out


def value(text: str, name: str, **labels) -> float:
    """The one sample `name` with exactly these labels; 0 when the series does not exist yet."""
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def iris_counts(env) -> dict[str, float]:
    text = scrape(agent_port(env))
    return {"200": value(text, "seldon_model_infer_total", **IRIS, code="200"),
            "500": value(text, "seldon_model_infer_total", **IRIS, code="500"),
            "seconds": value(text, "seldon_model_infer_seconds_total", **IRIS)}


def test_model_requests_are_counted_exactly_under_seldon_names(env):
    before = iris_counts(env)
    env.predict_many("iris", N_OK)
    for _ in range(N_BAD):  # three features for a four-feature model: the model rejects it
        status, body, _ = env.infer("iris", values=[1.0, 2.0, 3.0])
        assert status == 400, body
    after = iris_counts(env)
    assert after["200"] - before["200"] == N_OK
    assert after["500"] - before["500"] == N_BAD
    assert after["seconds"] > before["seconds"]

    text = scrape(agent_port(env))  # aggregates are the sums over the replica's models
    per_model = [s for s in samples(text) if s.name == "seldon_model_infer_total"]
    for code in ("200", "500"):
        assert value(text, "seldon_model_aggregate_infer_total", **REPLICA, code=code) == sum(
            s.value for s in per_model if s.labels["code"] == code)
    assert value(text, "seldon_model_aggregate_infer_seconds_total", **REPLICA) == \
        pytest.approx(sum(s.value for s in samples(text)
                          if s.name == "seldon_model_infer_seconds_total"))
    assert value(text, "seldon_load_model_counter", **REPLICA) >= 2  # iris and add10


def exported_names(text: str) -> set[str]:
    return {s.name for s in samples(text)}


def dashboard_metric_names() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    names = set()
    for expr in exprs:
        expr = re.sub(r"\{[^}]*\}|\[[^]]*\]", " ", expr)  # drop matchers and ranges
        expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)  # and grouping labels
        names |= {t for t in re.findall(r"[a-zA-Z_:][\w:]*", expr)
                  if t not in PROMQL_WORDS}
    return names


PROMQL_WORDS = {"sum", "rate", "increase", "histogram_quantile", "label_values", "avg", "max",
                "min", "count", "model", "pipeline"}  # functions, and label_values' labels


def flag(argv: list[str], name: str) -> int:
    return int(argv[argv.index(name) + 1])


def test_every_metric_on_the_dashboard_is_served_after_traffic(env):
    env.predict_many("iris", 2)
    for _ in range(3):
        status, reply, _ = env.infer("", body=json.dumps(PIPELINE_INPUT).encode(),
                                     path="/v2/pipelines/plus/infer")
        assert status == 200 and reply["outputs"][0]["data"] == [11.0], reply
    p = env.platform
    ports = {"agent": agent_port(env),
             "pipeline gateway": p.ports["pipelineGatewayHttp"],
             "dataflow engine": flag(p.services["dataflow-engine"].argv, "--metrics-port"),
             "scheduler": p.ports["schedulerMetrics"]}
    served = {name: exported_names(scrape(port)) for name, port in ports.items()}
    wanted = dashboard_metric_names()
    assert len(wanted) >= 15, wanted  # the name extraction really found the panels' metrics
    missing = wanted - set().union(*served.values())
    assert not missing, f"plotted but served by no service: {sorted(missing)}"


def test_counts_stay_monotonic_when_the_model_server_restarts(env):
    """MLServer's own counters start from zero again; Seldon's keep growing, and while the
    server is down the agent still serves its metrics with the last values."""
    env.predict_many("iris", 3)
    before = iris_counts(env)
    assert before["200"] >= 3
    misses = value(scrape(agent_port(env)), "seldon_cache_miss_count", **REPLICA)
    server = "mlserver-0-mlserver"
    env.platform.kill(server)
    assert iris_counts(env) == before  # unreadable server: last values, no error

    env.platform.restart(server)
    # The agent notices the new server lost iris and moves its route to itself (evicted).
    wait_until(lambda: value(scrape(agent_port(env)), "seldon_loaded_model_gauge",
                             **REPLICA) == 0, 30, "models seen as evicted", interval=0.2)
    env.predict_many("iris", 5)  # the first one reloads iris through the agent
    after = iris_counts(env)
    assert after["200"] == before["200"] + 5
    assert after["500"] == before["500"]
    assert after["seconds"] > before["seconds"]
    text = scrape(agent_port(env))
    assert value(text, "seldon_cache_miss_count", **REPLICA) == misses + 1


TRITON = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="iris_1",version="1"} 7
nv_inference_request_success{model="other_3",version="3"} 2
# HELP nv_inference_request_failure Number of failed inference requests
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="iris_1",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="iris_1",reason="REJECTED",version="1"} 1
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="iris_1",version="1"} 1500000
"""


def test_triton_counters_are_read_by_their_names():
    iris = parse_server_metrics(TRITON)["iris_1"]
    assert (iris.success, iris.failure, iris.seconds) == (7, 3, 1.5)
