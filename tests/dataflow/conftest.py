"""Fixtures for the dataflow tests: a real broker (each test that needs one runs against the
embedded Tansu and against Apache Kafka), a real MLServer with the sample models, an in-test
scheduler, and the two dataflow services (engine, pipeline gateway) as real processes."""

import glob
import json
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.broker import BROKER_KINDS, start_kafka
from runtime.kafka import FETCH_WAIT_MS, KafkaConfig
from runtime.procs import Service, free_port, http_ok, python_module, wait_until
from runtime.specs.manifest import load_file
from tests.dataflow.fake_scheduler import FakeScheduler

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MODELS = ["add10", "mul10", "sum2", "choose", "echo", "checkpos", "rows"]


def sample_pipelines() -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(str(ROOT / "samples/pipelines/*.yaml"))):
        for r in load_file(path):
            if r.kind == "Pipeline":
                out[r.name] = json.loads(r.spec_json())
    return out


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dataflow-logs")


# the kind of each broker started here, by bootstrap: the dataflow services' fetch wait
# follows it (runtime.kafka.FETCH_WAIT_MS)
BROKER_KIND_OF: dict[str, str] = {}


@pytest.fixture(scope="session", params=BROKER_KINDS, ids=[f"kafka={k}" for k in BROKER_KINDS])
def broker_kind(request) -> str:
    """Every test that starts a broker runs once per kind; pytest groups them by kind, so
    one session broker of each kind is up at a time."""
    return request.param


def broker_service(logs, broker_kind):
    """A broker of `broker_kind`: (its service, its bootstrap)."""
    svc, bootstrap = start_kafka(broker_kind, logs)
    BROKER_KIND_OF[bootstrap] = broker_kind
    yield svc, bootstrap
    svc.stop()


def running_broker(logs, broker_kind):
    for _svc, bootstrap in broker_service(logs, broker_kind):
        yield bootstrap


broker = pytest.fixture(scope="session", name="broker")(running_broker)


def start_mlserver(logs: Path, repo: Path, name: str = "mlserver") -> tuple[Service, str]:
    """MLServer serving the sample models from `repo` under their own names, ready; returns
    the service (restartable on the same ports) and its base URL."""
    for model in SAMPLE_MODELS:
        if not (repo / model).exists():
            shutil.copytree(ROOT / "samples/models" / model, repo / model)
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    svc = Service(name, [str(ROOT / ".venv/bin/mlserver"), "start", str(repo)], logs,
                  env={"MLSERVER_HTTP_PORT": str(http), "MLSERVER_GRPC_PORT": str(grpc_port),
                       "MLSERVER_METRICS_PORT": str(metrics), "MLSERVER_PARALLEL_WORKERS": "0"})
    url = f"http://127.0.0.1:{http}"
    try:
        start_and_wait_mlserver(svc, url)
    except BaseException:
        svc.stop()
        raise
    return svc, url


def start_and_wait_mlserver(svc: Service, url: str, timeout: float = 90) -> None:
    svc.start()
    wait_until(lambda: all(http_ok(f"{url}/v2/models/{m}/ready") for m in SAMPLE_MODELS),
               timeout, "MLServer sample models ready", proc=svc, interval=0.3)


@pytest.fixture(scope="session")
def mlserver(logs, tmp_path_factory):
    """MLServer serving the sample models under their own names; returns its base URL."""
    svc, url = start_mlserver(logs, tmp_path_factory.mktemp("models"))
    try:
        yield url
    finally:
        svc.stop()


def running_scheduler():
    port = free_port()
    fake = FakeScheduler().start(port)
    fake.address = f"127.0.0.1:{port}"
    yield fake
    fake.stop()


@pytest.fixture(scope="session", name="scheduler")
def scheduler_per_broker(broker_kind):
    """A scheduler per broker kind: both kinds' dataflows load the same pipelines, and, as with
    the real scheduler, a pipeline's version goes on after an unload (so the second kind's
    `chain` would be version 2)."""
    yield from running_scheduler()


class Dataflow:
    """The dataflow services as processes, restartable one by one."""

    def __init__(self, logs: Path, scheduler: FakeScheduler, bootstrap: str, envoy: str,
                 kafka_args: tuple[str, ...] = ()):
        self.scheduler, self.bootstrap = scheduler, bootstrap
        self.kafka = KafkaConfig(bootstrap=bootstrap)
        self.http_port, self.grpc_port, metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics = {"engine": f"http://127.0.0.1:{metrics_port}/metrics",
                        "gateway": f"{self.url}/metrics"}
        fetch_wait = FETCH_WAIT_MS[BROKER_KIND_OF.get(bootstrap, "embedded")]
        common = ["--scheduler", scheduler.address, "--kafka-bootstrap", bootstrap,
                  "--kafka-fetch-wait-ms", str(fetch_wait), *kafka_args]
        self.services = {
            "engine": Service("engine", python_module(
                "runtime.dataflow.engine", *common, "--envoy", envoy, "--metrics-host",
                "127.0.0.1", "--metrics-port", str(metrics_port)), logs, cwd=str(ROOT)),
            "gateway": Service("gateway", python_module(
                "runtime.dataflow.pipelinegateway", *common, "--host", "127.0.0.1",
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)),
                logs, cwd=str(ROOT)),
        }

    def start(self, name: str) -> None:
        if self.services[name].alive():
            return
        svc = self.services[name].start()
        if name == "gateway":
            wait_until(lambda: http_ok(f"{self.url}/v2/health/ready"), 60,
                       "pipeline gateway HTTP", proc=svc)

    def stop(self, name: str) -> None:
        self.services[name].stop()

    def kafka_requests(self, name: str) -> int:
        """Requests the service's Kafka clients sent so far, as its /metrics counts them
        (runtime.dataflow.kafkastats: updated every few seconds)."""
        text = httpx.get(self.metrics[name], timeout=10).text
        return int(sum(s.value for f in text_string_to_metric_families(text)
                       if f.name == "core2_kafka_requests" for s in f.samples
                       if s.name == "core2_kafka_requests_total"))

    def infer(self, pipeline: str, inputs: list[dict], timeout: float = 30, **headers):
        return httpx.post(f"{self.url}/v2/pipelines/{pipeline}/infer",
                          json={"inputs": inputs}, headers=headers, timeout=timeout)


def running_dataflow(logs, scheduler, broker, mlserver, kafka_args: tuple[str, ...] = ()):
    pipelines = sample_pipelines()
    for name, spec in pipelines.items():
        scheduler.set_pipeline(name, spec)
    df = Dataflow(logs, scheduler, broker, mlserver, kafka_args)
    try:
        for name in df.services:
            df.start(name)
        scheduler.wait_ready(list(pipelines), timeout=90)
        yield df
    finally:
        for svc in df.services.values():
            svc.stop()


dataflow = pytest.fixture(scope="session", name="dataflow")(running_dataflow)


def tensor(name: str, data: list, datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


def outputs_of(response) -> dict[str, list]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}
