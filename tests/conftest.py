"""Fixtures for end-to-end tests: whole local platforms (real scheduler, Envoy, MLServer,
agents) on free ports in a temporary run dir, stopped after use."""

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, LocalServer, Ports
from runtime.local.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
PROBE_INPUT = [6.0, 2.2, 5.0, 1.5]   # samples: iris answers 2, iris2 answers 1


def iris_request(values=PROBE_INPUT) -> bytes:
    """An OIP REST request body for the sample iris models."""
    return json.dumps({"inputs": [{"name": "predict", "shape": [1, len(values)],
                                   "datatype": "FP32", "data": values}]}).encode()
IRIS_CLASS, IRIS2_CLASS = 2, 1


def wait_for(check, timeout: float, what: str):
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def write_cert(cert, cert_file: Path, key_file: Path) -> None:
    """A trustme leaf certificate and its key as PEM files."""
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))


def free_ports() -> Ports:
    return Ports(**{k: 0 for k in Ports.model_fields})


@pytest.fixture(scope="session")
def sample_models() -> Path:
    models = SAMPLES / "models"
    if not all((models / m / "model.joblib").is_file() for m in ("iris", "iris2")):
        subprocess.run([sys.executable, str(SAMPLES / "train_iris.py")], check=True)
    return models


class Env:
    """A started platform plus the clients a test needs."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.url = platform.inference_url
        self.scheduler = SchedulerClient(platform.scheduler_address)

    def load_model(self, name: str, uri: Path | str, wait: bool = True, **spec):
        spec = {"storageUri": str(uri), "requirements": ["sklearn"], **spec}
        self.scheduler.apply("Model", name, json.dumps(spec))
        if wait:
            return self.scheduler.wait("Model", name, timeout=60)
        return None

    def infer(self, model: str, values=PROBE_INPUT, headers: dict | None = None,
              body: bytes | None = None, path: str | None = None) -> tuple[int, dict, dict]:
        """REST inference through Envoy: (status, JSON body, response headers)."""
        payload = body if body is not None else iris_request(values)
        req = urllib.request.Request(
            self.url + (path or f"/v2/models/{model}/infer"), data=payload,
            headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = {"raw": text.decode(errors="replace")}
            return e.code, parsed, dict(e.headers)

    def predict_many(self, model: str, n: int, headers: dict | None = None) -> list[int]:
        """n sequential REST inferences on one keep-alive connection; the classes answered."""
        body = iris_request()
        conn = http.client.HTTPConnection("127.0.0.1", int(self.url.rsplit(":", 1)[1]),
                                          timeout=60)
        answers = []
        try:
            for _ in range(n):
                conn.request("POST", f"/v2/models/{model}/infer", body,
                             {"content-type": "application/json", **(headers or {})})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200, data
                answers.append(data["outputs"][0]["data"][0])
        finally:
            conn.close()
        return answers

    def predict(self, model: str, **kwargs) -> int:
        status, body, _ = self.infer(model, **kwargs)
        assert status == 200, body
        return body["outputs"][0]["data"][0]


@pytest.fixture
def make_env(tmp_path, sample_models):
    """Factory: make_env(servers=[LocalServer(...)]) starts a platform and returns an Env."""
    started: list[Platform] = []

    def make(servers: list[LocalServer] | None = None, pipelines: bool = False,
             **options) -> Env:
        cfg = LocalConfig(ports=free_ports(), pipelines=pipelines,
                          servers=servers or [LocalServer(name="mlserver")], **options)
        platform = Platform(tmp_path / f"run{len(started)}", cfg)
        started.append(platform)
        platform.start()
        return Env(platform)

    yield make
    for p in started:
        p.stop()


@contextmanager
def platform_env(run_dir: Path, models: dict[str, tuple[Path, dict]], **options):
    """A started platform (no pipelines) with `models` ({name: (artifact, spec fields)})
    loaded; stopped on leaving, also when a load fails."""
    platform = Platform(run_dir, LocalConfig(ports=free_ports(), pipelines=False,
                                             **options)).start()
    env = Env(platform)
    try:
        for name, (artifact, spec) in models.items():
            env.load_model(name, artifact, **spec)
        yield env
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def iris_env(tmp_path_factory, sample_models):
    """One platform with iris loaded, shared by a module's read-only tests."""
    with platform_env(tmp_path_factory.mktemp("iris"),
                      {"iris": (sample_models / "iris", {})}) as env:
        yield env
