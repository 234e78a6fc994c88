"""The scheduler's API and agent ports with a bearer token, TLS and mutual TLS: every core2
client (CLI, agents, dataflow services) authenticates, and a caller without the credentials
gets a clear refusal."""

import subprocess
import sys

import httpx
import pytest
import trustme

from runtime import scheduler_auth as auth
from runtime.client import SchedulerClient, SchedulerError
from runtime.procs import Service, free_port, python_module, tcp_open, wait_until
from runtime.specs.manifest import load_file
from tests.conftest import IRIS_CLASS, ROOT, write_cert

TOKEN = "a-long-random-token"


def _set_env(monkeypatch, **env) -> None:
    for var in (auth.TOKEN, auth.TOKEN_FILE, auth.CERT, auth.KEY, auth.CA, auth.SERVER_NAME):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)


def _client(address: str, monkeypatch, **env) -> SchedulerClient:
    _set_env(monkeypatch, **env)
    return SchedulerClient(address, timeout=5)


def test_a_token_protects_the_scheduler_and_every_core2_service_sends_it(
        make_env, sample_models, monkeypatch, tmp_path):
    monkeypatch.setenv(auth.TOKEN, TOKEN)  # inherited by the scheduler, agents and dataflow
    env = make_env(pipelines=True)

    # The agent authenticated: iris is placed, loaded and served.
    env.load_model("iris", sample_models / "iris")
    assert env.predict("iris") == IRIS_CLASS
    # The dataflow services authenticated: they received the pipeline and reported it ready.
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            env.scheduler.apply_resource(r)
            env.scheduler.wait("Model", r.name, timeout=90)
    [chain] = load_file(ROOT / "samples/pipelines/chain.yaml")
    env.scheduler.apply_resource(chain)
    assert env.scheduler.wait("Pipeline", "chain", timeout=90).state == "PipelineReady"
    r = httpx.post(f"{env.url}/v2/pipelines/chain/infer", timeout=30, json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [110.0]

    address = env.platform.scheduler_address
    for token_env in ({}, {auth.TOKEN: "wrong"}):
        with pytest.raises(SchedulerError, match="bearer token"):
            _client(address, monkeypatch, **token_env).status("Model")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    [iris] = _client(address, monkeypatch, **{auth.TOKEN_FILE: str(token_file)}).status(
        "Model", "iris")
    assert iris.state == "ModelAvailable"

    # The CLI without the token: a clear error, no traceback, nothing changed.
    monkeypatch.delenv(auth.TOKEN_FILE)
    cli = subprocess.run([sys.executable, "-m", "runtime.cli", "--run-dir",
                          str(env.platform.run_dir), "model", "unload", "iris"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert cli.returncode != 0
    assert "bearer token" in cli.stderr and "Traceback" not in cli.stderr
    assert env.predict("iris") == IRIS_CLASS


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the scheduler's certificate for 127.0.0.1, and a client certificate."""
    home = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(home / "ca.pem"))
    write_cert(ca.issue_cert("127.0.0.1", "scheduler.core2.svc"),
               home / "server.pem", home / "server.key")
    write_cert(ca.issue_cert("core2-cli@example.com"), home / "client.pem", home / "client.key")
    other = trustme.CA()  # a CA the scheduler does not trust
    write_cert(other.issue_cert("stranger@example.com"),
               home / "stranger.pem", home / "stranger.key")
    return home


def _scheduler(tmp_path, env: dict) -> tuple[Service, str]:
    api = free_port()
    svc = Service("scheduler", python_module(
        "runtime.scheduler", "--data-dir", str(tmp_path / "state"), "--api-port", str(api),
        "--agent-port", str(free_port()), "--xds-port", str(free_port())), tmp_path,
        env=env).start()
    wait_until(lambda: tcp_open(api), 30, "scheduler API port", proc=svc)
    return svc, f"127.0.0.1:{api}"


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
        pki, tmp_path, monkeypatch):
    svc, address = _scheduler(tmp_path, {
        auth.CERT: str(pki / "server.pem"), auth.KEY: str(pki / "server.key"),
        auth.CA: str(pki / "ca.pem"), auth.TOKEN: TOKEN})
    try:
        trusted = {auth.CA: str(pki / "ca.pem"), auth.TOKEN: TOKEN}
        ok = _client(address, monkeypatch, **trusted, **{
            auth.CERT: str(pki / "client.pem"), auth.KEY: str(pki / "client.key")})
        assert ok.status("Model") == []
        # Through a port-forward the address differs from the certificate's names.
        forwarded = _client(address.replace("127.0.0.1", "localhost"), monkeypatch, **trusted,
                            **{auth.CERT: str(pki / "client.pem"),
                               auth.KEY: str(pki / "client.key"),
                               auth.SERVER_NAME: "scheduler.core2.svc"})
        assert forwarded.status("Model") == []

        refused = [
            {},                                                     # plaintext
            trusted,                                                # no client certificate
            {**trusted, auth.CERT: str(pki / "stranger.pem"),       # certificate of another CA
             auth.KEY: str(pki / "stranger.key")},
        ]
        for env in refused:
            with pytest.raises(SchedulerError, match="not reachable"):
                _client(address, monkeypatch, **env).status("Model")
        # Right certificate, no token: still refused.
        with pytest.raises(SchedulerError, match="bearer token"):
            _client(address, monkeypatch, **{auth.CA: str(pki / "ca.pem"),
                                             auth.CERT: str(pki / "client.pem"),
                                             auth.KEY: str(pki / "client.key")}).status("Model")
    finally:
        svc.stop()


def test_unreadable_or_half_set_credentials_are_named(tmp_path, monkeypatch, pki):
    with pytest.raises(SchedulerError, match=f"{auth.CA}=.*missing.pem"):
        _client("127.0.0.1:1", monkeypatch, **{auth.CA: str(tmp_path / "missing.pem")})
    with pytest.raises(SchedulerError, match=f"{auth.CERT} and {auth.KEY} must be set together"):
        _client("127.0.0.1:1", monkeypatch, **{auth.CERT: str(pki / "client.pem")})
    with pytest.raises(SchedulerError, match="not a certificate and its private key"):
        _client("127.0.0.1:1", monkeypatch, **{auth.CERT: str(pki / "client.pem"),
                                               auth.KEY: str(pki / "server.key")})
    _set_env(monkeypatch, **{auth.CERT: str(pki / "server.pem")})
    svc = Service("scheduler", python_module(
        "runtime.scheduler", "--data-dir", str(tmp_path / "state"), "--api-port",
        str(free_port())), tmp_path).start()
    try:
        wait_until(lambda: not svc.alive(), 30, "the scheduler to refuse its settings")
        assert svc.returncode() != 0
        assert f"{auth.CERT} and {auth.KEY} must be set together" in svc.tail()
        assert "Traceback" not in svc.tail()
    finally:
        svc.stop()
