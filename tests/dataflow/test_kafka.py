"""Kafka helpers: client settings from flags/env, topic names, topic creation."""

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from runtime.kafka import KafkaConfig, KafkaSettings, ensure_topics
from runtime.settings import load


def test_security_settings_come_from_env(monkeypatch):
    for k, v in {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                 "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p",
                 "KAFKA_SSL_CA_LOCATION": "/ca.pem"}.items():
        monkeypatch.setenv(k, v)
    # the services' settings (runtime.dataflow.service) derive from KafkaSettings
    cfg = load(KafkaSettings, "test", ["--kafka-bootstrap", "b:9093",
                                       "--kafka-prefix", "x"]).kafka_config()
    merged = cfg.consumer("g") | cfg.producer()
    assert merged.items() >= {
        "bootstrap.servers": "b:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p",
        "ssl.ca.location": "/ca.pem", "group.id": "g"}.items()
    assert cfg.model_inputs("m") == "x.default.model.m.inputs"
    assert cfg.pipeline_outputs("p") == "x.default.pipeline.p.outputs"
    assert cfg.errors() == "x.default.errors.errors"
    assert cfg.parse_topic("x.default.model.m.inputs") == ("model", "m", "inputs")
    assert cfg.parse_topic("other.topic") is None


def test_topics_are_created_with_the_configured_partitions(broker):
    cfg = KafkaConfig(bootstrap=broker, namespace="partitions-test", partitions=3)
    topic = cfg.model_inputs("m")
    ensure_topics(cfg, [topic])
    ensure_topics(cfg, [topic])  # idempotent
    meta = AdminClient(cfg.common()).list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 3


def test_no_client_of_the_services_makes_the_broker_create_a_topic(broker):
    """A broker restart loses the embedded broker's topics; until the services create them
    again (with the configured partitions), their clients keep asking about them. A broker
    that auto-created one on such a question would give it its own partition count (Tansu:
    4), and a reader of the configured partitions would miss most records."""
    cfg = KafkaConfig(bootstrap=broker, namespace="no-auto-create")
    admin = AdminClient(cfg.common())
    clients = {"admin": admin, "producer": Producer(cfg.producer()),
               "consumer": Consumer(cfg.consumer(None))}
    try:
        for name, client in clients.items():
            topic = cfg.pipeline_outputs(name)
            client.list_topics(topic, timeout=10)
            assert topic not in admin.list_topics(timeout=10).topics, name
    finally:
        clients["consumer"].close()
