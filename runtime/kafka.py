"""Kafka client settings shared by every dataflow service: security (SASL/TLS) from flags or
env, Seldon-style topic names, and idempotent topic creation."""

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import Field

from runtime.settings import ServiceSettings

DEFAULT_PREFIX = "seldon"
DEFAULT_NAMESPACE = "default"

# Header names carried on every dataflow record (key = request id).
H_PIPELINE = "pipeline"
H_STEP = "step"
H_MODEL = "model"
H_ERROR = "error"
H_VERSION = "pipeline-version"
# When the caller stops waiting, epoch milliseconds: the model gateway retries transient model
# failures until then. Set by the pipeline gateway, carried along every step.
H_DEADLINE = "seldon-deadline-ms"

# fetch.wait.max.ms by broker kind. The embedded Tansu answers a fetch only when this wait
# ends (no wake-up on produce), so it bounds every hop and must stay short (its idle consumers
# doze instead: runtime.dataflow.pacing). Apache Kafka answers a waiting fetch as soon as a
# record arrives, so a long wait costs no latency there and spares the broker and the clients
# hundreds of empty fetches a second while idle (1 s rather than 500 ms: idle broker +
# services 3.3-3.6 % of a core against 4.1-4.4 %). What it delays: a partition assigned
# while a fetch waits is first fetched when that fetch returns.
# (A long wait once cost seconds per hop: the services asked the consumer itself for
# metadata and watermarks, and those requests queued behind the waiting fetch; they go
# through an admin client now: runtime.dataflow.subscription.)
FETCH_WAIT_MS = {"embedded": 2, "apache": 1000}
# A step's request and answer on the model's topics are a record of what flowed (`inspect`),
# which nothing waits for: sent in batches, they cost the broker a fraction of one produce
# request each (bench/pipelines.py, Apache Kafka, 2 steps at concurrency 32: the broker's CPU
# per pipeline request 2.8 -> 1.5 ms). librdkafka lingers per partition, so a pipeline's model
# topics (two per step) go out in separate requests: at 20 ms that was 0.68 produce requests
# per 2-step pipeline request at 170 a second, at 100 ms 0.20 (core2_kafka_requests_total).
RECORD_LINGER_MS = 100
# Seen with Tansu under load: a produce request left unanswered. Producers send it again
# after 5 s rather than librdkafka's default 30 s.
PRODUCE_TIMEOUT_MS = 5000

log = logging.getLogger("kafka")
_reported: dict[str, float] = {}  # what a client's error_cb last said -> when


def report_error(cfg: "KafkaConfig", err: KafkaError) -> None:
    """Every client's error_cb: a wrong setting is named in plain words, at most every 30 s
    per kind of fault (the client keeps retrying, and so this keeps reporting)."""
    code, text = err.code(), err.str()
    level = logging.ERROR
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        what = (f"Kafka authentication failed for user {cfg.sasl_username!r} "
                f"(KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD, mechanism "
                f"{cfg.sasl_mechanism or '-'} KAFKA_SASL_MECHANISM)")
    elif code == KafkaError._SSL or "SSL handshake" in text or "certificate" in text:
        what = (f"Kafka TLS failed (KAFKA_SSL_CA_LOCATION={cfg.ssl_ca_location or 'system CAs'}"
                f", KAFKA_SECURITY_PROTOCOL={cfg.security_protocol or 'PLAINTEXT'})")
    else:  # the broker away (restarting?): the services report it in their readiness too
        what, level = f"Kafka: {err.name()}", logging.WARNING
    now = time.monotonic()
    if now - _reported.get(what, -1e9) >= 30:
        _reported[what] = now
        log.log(level, "%s: %s", what, text)


@dataclass
class KafkaConfig:
    bootstrap: str
    prefix: str = DEFAULT_PREFIX
    namespace: str = DEFAULT_NAMESPACE
    partitions: int = 1
    replication: int = 1
    security_protocol: str = ""
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_location: str = ""
    fetch_wait_ms: int = int(os.environ.get("KAFKA_FETCH_WAIT_MS", FETCH_WAIT_MS["embedded"]))
    assignment: str = "auto"   # "group" | "static" | "auto" (see resolved_assignment)
    extra: dict = field(default_factory=dict)

    def resolved_assignment(self) -> str:
        """"static" (one process takes all partitions, no group membership) or "group".
        auto: static when every bootstrap server is on loopback (local mode and tests, where
        one replica of each service runs and the broker may be the embedded Tansu, whose
        group rejoin after a crash can take minutes), group otherwise (a cluster, where
        replicas share partitions)."""
        if self.assignment in ("group", "static"):
            return self.assignment
        hosts = [s.rsplit(":", 1)[0].strip("[]") for s in self.bootstrap.split(",") if s]
        loopback = all(h in ("localhost", "::1") or h.startswith("127.") for h in hosts)
        return "static" if hosts and loopback else "group"

    # -- client configs -------------------------------------------------------------------
    def common(self) -> dict:
        conf = {"bootstrap.servers": self.bootstrap, "socket.nagle.disable": True,
                # topics are created by the services with the configured partitions. A
                # client that lets the broker auto-create one (a metadata request about a
                # topic a broker restart lost; librdkafka allows it by default for producers
                # and admin clients) gets the broker's default count (Tansu: 4), of which the
                # static readers and a reader of partition 0 read one
                "allow.auto.create.topics": False,
                "error_cb": lambda err: report_error(self, err), **self.extra}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def producer(self, linger_ms: int = 0) -> dict:
        """Latency over batching by default: every hop of a pipeline waits on this. Records
        no hop waits for (a step's request and answer, kept for `inspect`) may linger, so the
        broker takes them in batches."""
        return {**self.common(), "linger.ms": linger_ms, "acks": 1,
                # one produce request at a time: records that come while it is answered go
                # together in the next, so batches grow with load and none waits at low load
                # (a 2-step chain at concurrency 32 on Apache Kafka: broker 1.13-1.26 -> 1.03
                # ms of CPU per request, throughput/direct 0.53-0.54 -> 0.57)
                "max.in.flight.requests.per.connection": 1,
                "enable.idempotence": False, "compression.type": "none",
                "request.timeout.ms": PRODUCE_TIMEOUT_MS}

    def consumer(self, group: str | None, offset_reset: str = "earliest") -> dict:
        conf = {**self.common(),
                # Tansu admits a member to a group after ~session timeout / 2.
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": self.fetch_wait_ms,  # FETCH_WAIT_MS
                "fetch.error.backoff.ms": 5,
                "auto.offset.reset": offset_reset,
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 5000}
        if group:
            conf["group.id"] = group
            conf["enable.auto.commit"] = True
            conf["auto.commit.interval.ms"] = 200
            # At-least-once: the service stores a record's offset itself once what the record
            # produced is acknowledged (runtime.dataflow.offsets); auto-commit commits that.
            conf["enable.auto.offset.store"] = False
        else:
            # Assign-only consumers never join a group but librdkafka still wants an id.
            conf["group.id"] = "core2-unused"
            conf["enable.auto.commit"] = False
        return conf

    # -- topic names ----------------------------------------------------------------------
    def _topic(self, *parts: str) -> str:
        return ".".join([self.prefix, self.namespace, *parts])

    def model_inputs(self, model: str) -> str:
        return self._topic("model", model, "inputs")

    def model_outputs(self, model: str) -> str:
        return self._topic("model", model, "outputs")

    def pipeline_inputs(self, pipeline: str) -> str:
        return self._topic("pipeline", pipeline, "inputs")

    def pipeline_outputs(self, pipeline: str) -> str:
        return self._topic("pipeline", pipeline, "outputs")

    def errors(self) -> str:
        return self._topic("errors", "errors")

    def feedback(self) -> str:
        """Adaptive experiments' accepted feedback (runtime.scheduler.feedback)."""
        return self._topic("feedback")

    def parse_topic(self, topic: str) -> tuple[str, str, str] | None:
        """('model'|'pipeline', name, 'inputs'|'outputs') or ('errors', '', '')."""
        head = f"{self.prefix}.{self.namespace}."
        if not topic.startswith(head):
            return None
        rest = topic[len(head):]
        if rest == "errors.errors":
            return ("errors", "", "")
        kind, _, tail = rest.partition(".")
        name, _, direction = tail.rpartition(".")
        if kind in ("model", "pipeline") and name and direction in ("inputs", "outputs"):
            return (kind, name, direction)
        return None


def partitions_of(client, topic: str, timeout: float = 10) -> list[int]:
    """`topic`'s partitions from the broker's metadata, asked through `client` (an admin
    client, a consumer or a producer); RuntimeError when the broker does not know it (lost
    again since it was created, the broker restarted)."""
    meta = client.list_topics(topic, timeout=timeout).topics[topic]
    if meta.error is not None or not meta.partitions:
        raise RuntimeError(f"topic {topic}: {meta.error or 'no partitions'}")
    return sorted(meta.partitions)


def ensure_topics(cfg: KafkaConfig, topics: list[str], timeout: float = 15) -> None:
    """Create the topics that do not exist yet (with cfg.partitions); existing ones are kept."""
    admin = AdminClient(cfg.common())
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = sorted(set(topics) - existing)
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=cfg.partitions, replication_factor=cfg.replication)
         for t in missing], operation_timeout=timeout, request_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"creating Kafka topic {topic}: {e}") from None
    # Apache Kafka answers a creation once its controller has it; the broker's metadata (what
    # a client then reads partitions from) follows a moment later. Return once it shows them.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout).topics
        if all(t in meta and meta[t].error is None and meta[t].partitions for t in missing):
            return
        time.sleep(0.05)


class KafkaSettings(ServiceSettings):
    """The --kafka-* flags (env KAFKA_*) of every service that talks to Kafka: a service's
    settings class derives from it (runtime.settings)."""

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers "
                                 "host:port[,host:port]")
    kafka_prefix: str = Field(DEFAULT_PREFIX, description="topic name prefix")
    kafka_namespace: str = Field(DEFAULT_NAMESPACE, description="topic namespace")
    kafka_partitions: int = Field(1, description="partitions of the topics it creates")
    kafka_replication: int = Field(1, description="replication factor of those topics")
    kafka_fetch_wait_ms: int = Field(FETCH_WAIT_MS["embedded"], description=(
        "consumer fetch.wait.max.ms: 2 for the embedded broker, 500 for Apache Kafka. On the "
        "embedded broker it bounds each hop's latency, and lower costs more CPU while idle "
        "(Tansu: ~80% of a core at 2 ms, ~7% at 100 ms with 9 pipelines); Apache Kafka "
        "answers a waiting fetch on produce, so there a long wait costs no latency"))
    kafka_assignment: Literal["auto", "group", "static"] = Field("auto", description=(
        "group: replicas share partitions as consumer-group members; static: this process "
        "reads every partition (one replica), resuming at once after a restart; auto: "
        "static when the bootstrap servers are on loopback, else group"))
    kafka_security_protocol: str = Field("", description="PLAINTEXT, SSL, SASL_PLAINTEXT or "
                                         "SASL_SSL")
    kafka_sasl_mechanism: str = Field("", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_location: str = Field("", description="CA file to verify the broker with")

    def kafka_config(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap=self.kafka_bootstrap, prefix=self.kafka_prefix,
            namespace=self.kafka_namespace, partitions=self.kafka_partitions,
            replication=self.kafka_replication, fetch_wait_ms=self.kafka_fetch_wait_ms,
            assignment=self.kafka_assignment, security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism, sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password, ssl_ca_location=self.kafka_ssl_ca_location)
