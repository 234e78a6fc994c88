"""The dataflow services over a secured Apache Kafka: an SSL listener (certificates made here,
a PEM keystore) and a SASL_SSL listener with SCRAM-SHA-512. Each service is given only the
secured listener, so every client it makes (producer, consumer, admin) must use the settings;
wrong credentials are reported naming them, and the service keeps running."""

import contextlib
import json
import time

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from runtime.cli import main as cli_main
from runtime.kafka import FETCH_WAIT_MS
from runtime.kafka_apache import ApacheKafka, start_apache_kafka
from runtime.procs import Service, free_port, python_module, wait_until
from tests.dataflow.conftest import (
    BROKER_KIND_OF,
    ROOT,
    outputs_of,
    running_dataflow,
    running_scheduler,
    tensor,
)

USER, PASSWORD = "pipelines", "s3cret-pw"
JOINED = {"SUM": [(1 + 10) + 1 * 10, (2 + 10) + 2 * 10]}  # samples: join of add10 and mul10


@pytest.fixture(scope="module")
def secured(logs, tmp_path_factory):
    """Apache Kafka with SSL and SASL_SSL listeners; returns (kafka, CA file)."""
    home = tmp_path_factory.mktemp("kafka-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(home / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    # Kafka's PEM keystore: the key in PKCS#8, then the certificate chain
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (home / "keystore.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    kafka = ApacheKafka(home / "kafka", keystore=home / "keystore.pem",
                        users={USER: PASSWORD})
    svc, _ = start_apache_kafka(logs, kafka=kafka)
    for bootstrap in (kafka.ssl_bootstrap, kafka.sasl_bootstrap):
        BROKER_KIND_OF[bootstrap] = "apache"
    try:
        yield kafka, str(home / "ca.pem")
    finally:
        svc.stop()


def tls_args(ca: str) -> tuple[str, ...]:
    return ("--kafka-security-protocol", "SSL", "--kafka-ssl-ca-location", ca)


def sasl_args(ca: str, password: str = PASSWORD) -> tuple[str, ...]:
    return ("--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-512",
            "--kafka-sasl-username", USER, "--kafka-sasl-password", password,
            "--kafka-ssl-ca-location", ca)


def chain_answers(df) -> None:
    for i in range(3):
        assert outputs_of(df.infer("chain", [tensor("x", [float(i)])])) == {
            "OUTPUT": [(i + 10.0) * 10]}
    # a join too: two branches meeting in the engine
    assert outputs_of(df.infer("join", [tensor("x", [1.0, 2.0])])) == JOINED


@contextlib.contextmanager
def dataflow_over(logs, bootstrap: str, mlserver: str, kafka_args: tuple[str, ...]):
    """The three services (and a scheduler of their own) on one secured listener."""
    with contextlib.contextmanager(running_scheduler)() as scheduler, \
            contextlib.contextmanager(running_dataflow)(logs, scheduler, bootstrap, mlserver,
                                                        kafka_args) as df:
        yield df


def test_pipelines_answer_over_tls(logs, secured, mlserver):
    kafka, ca = secured
    with dataflow_over(logs, kafka.ssl_bootstrap, mlserver, tls_args(ca)) as df:
        chain_answers(df)


def test_pipelines_answer_over_sasl_scram(logs, secured, mlserver, capsys):
    kafka, ca = secured
    with dataflow_over(logs, kafka.sasl_bootstrap, mlserver, sasl_args(ca)) as df:
        chain_answers(df)
        # `core2 pipeline inspect` takes the same flags
        rid = df.infer("chain", [tensor("x", [5.0])]).headers["x-request-id"]
        code = cli_main(["--scheduler", df.scheduler.address, "pipeline", "inspect",
                         "chain.outputs", "--request-id", rid,
                         "--kafka-bootstrap", kafka.sasl_bootstrap, *sasl_args(ca)])
        out = capsys.readouterr()
        assert code == 0, out.err
        topic, key, value = out.out.strip().split("\t")
        assert (topic, key) == ("seldon.default.pipeline.chain.outputs", rid)
        assert json.loads(value)["outputs"][0]["data"] == [150.0]


def test_wrong_credentials_are_reported_naming_the_setting(logs, secured):
    kafka, ca = secured
    http = free_port()
    want = (f"Kafka authentication failed for user '{USER}' "
            "(KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD")
    # no pipelines: each service's own clients meet the broker (the gateway reads the errors
    # topic; the engine has nothing assigned, yet reports it too)
    with contextlib.contextmanager(running_scheduler)() as scheduler:
        common = ("--scheduler", scheduler.address, "--kafka-bootstrap", kafka.sasl_bootstrap,
                  "--kafka-fetch-wait-ms", str(FETCH_WAIT_MS["apache"]),
                  *sasl_args(ca, "wrong"))
        services = [
            Service("gateway-bad-password", python_module(
                "runtime.dataflow.pipelinegateway", *common, "--host", "127.0.0.1",
                "--http-port", str(http), "--grpc-port", str(free_port())), logs,
                cwd=str(ROOT)),
            Service("engine-bad-password", python_module(
                "runtime.dataflow.engine", *common, "--envoy", "http://127.0.0.1:9"), logs,
                cwd=str(ROOT))]
        try:
            for svc in services:
                svc.start()
            for svc in services:
                wait_until(lambda svc=svc: want in svc.tail(200), 60,
                           f"the authentication error in {svc.name}'s log", proc=svc)
            time.sleep(3)
            for svc in services:
                assert svc.alive(), svc.tail()
                log = svc.log_path.read_text()
                assert "Traceback" not in log
                assert log.count(want) == 1  # once per 30 s, not once per retry
            ready = httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=10)
            assert ready.status_code == 503, ready.text   # it cannot serve pipelines
            assert "Kafka" in ready.json()["error"], ready.text
        finally:
            for svc in services:
                svc.stop()
