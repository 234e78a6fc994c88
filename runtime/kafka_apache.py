"""Apache Kafka for tests, benches and `core2 up --kafka apache`: one KRaft node (broker and
controller in one JVM) on loopback, run from the jars `scripts/tools` fetched from Maven
Central. Optional SSL and SASL_SSL (SCRAM-SHA-512) listeners beside the plaintext one."""

import shutil
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from pathlib import Path

from runtime.procs import Service, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / ".tools" / "apache-kafka" / "lib"
SCRAM = "SCRAM-SHA-512"
# Sized for a test broker on a small, busy machine: a small heap with the serial collector
# (no GC threads competing for 2 cores; young pauses of a few ms on this heap) and the C1 JIT
# only, which starts the broker in 5-8 s where the full JIT took 13-36 s under load. The
# benches take the full JIT (`full_jit`), as a production broker runs: it costs less CPU per
# request once warm.
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true"]
C1_ONLY = "-XX:TieredStopAtLevel=1"
LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


class KafkaJarsMissing(RuntimeError):
    pass


def java_cp() -> str:
    if not any(LIB.glob("kafka_2.13-*.jar")):
        raise KafkaJarsMissing(f"Apache Kafka's jars are not in {LIB}: run scripts/tools "
                               "(it fetches them from Maven Central; needs Java 17 and Maven)")
    if not shutil.which("java"):
        raise KafkaJarsMissing("Apache Kafka needs Java 17+ (`java` is not on PATH)")
    return f"{LIB}/*"


@dataclass
class ApacheKafka:
    """A single-node cluster's files under `home`: server.properties, log4j2.properties and
    the data folder. A restart of the same `home` keeps the topics and offsets."""

    home: Path
    port: int = 0                       # PLAINTEXT listener (clients and the broker itself)
    controller_port: int = 0
    ssl_port: int = 0                   # SSL listener, when `keystore` is given
    sasl_port: int = 0                  # SASL_SSL listener (SCRAM-SHA-512), when `users` too
    keystore: Path | None = None        # PEM: the unencrypted PKCS#8 key, then the cert chain
    users: dict[str, str] = field(default_factory=dict)  # SCRAM users created at format time
    full_jit: bool = False              # C1 and C2 (slower start, less CPU once warm)

    def __post_init__(self):
        self.home = Path(self.home)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.keystore:
            self.ssl_port = self.ssl_port or free_port()
            if self.users:
                self.sasl_port = self.sasl_port or free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def properties(self) -> str:
        listeners = {"PLAINTEXT": self.port}
        if self.ssl_port:
            listeners["SSL"] = self.ssl_port
        if self.sasl_port:
            listeners["SASL_SSL"] = self.sasl_port
        advertised = ",".join(f"{n}://127.0.0.1:{p}" for n, p in listeners.items())
        conf = {
            "process.roles": "broker,controller", "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(
                f"{n}:{n}" for n in [*listeners, "CONTROLLER"]).replace(
                "CONTROLLER:CONTROLLER", "CONTROLLER:PLAINTEXT"),
            "log.dirs": self.home / "data",
            # one node: every internal topic with one replica, and few partitions (the
            # offsets topic's default 50 takes seconds to create on a small machine)
            "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": 1, "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0, "num.partitions": 1,
            # threads for a 2-core machine, not a server
            "num.network.threads": 2, "num.io.threads": 2, "background.threads": 2,
            "num.recovery.threads.per.data.dir": 1, "log.cleaner.threads": 1,
            # idle cost: no no-op record in the metadata log every 500 ms (one node has no
            # follower to prove itself to) and a heartbeat every 4 s instead of 2 (a bare
            # broker idled at 3.4-5.4 % of a core, 1.7-3.3 % with both)
            "metadata.max.idle.interval.ms": 0,
            "broker.heartbeat.interval.ms": 4000, "broker.session.timeout.ms": 18000,
        }
        if self.ssl_port:
            conf |= {"ssl.keystore.type": "PEM", "ssl.keystore.location": self.keystore,
                     "ssl.client.auth": "none"}
        if self.sasl_port:
            conf |= {"sasl.enabled.mechanisms": SCRAM,
                     f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config":
                         "org.apache.kafka.common.security.scram.ScramLoginModule required;"}
        return "".join(f"{k}={v}\n" for k, v in conf.items())

    def prepare(self) -> list[str]:
        """Write the config, format the storage once (a restart keeps it), and return the
        broker's argv."""
        import subprocess

        cp = java_cp()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self.properties())
        (self.home / "log4j2.properties").write_text(LOG4J)
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            scram = [a for user, pw in self.users.items()
                     for a in ("--add-scram", f"{SCRAM}=[name={user},password={pw}]")]
            proc = subprocess.run(
                ["java", *self.jvm_opts(), "-Xmx256m", C1_ONLY,
                 "-XX:+UseSerialGC", "-cp", cp, "kafka.tools.StorageTool",
                 "format", "-t", cluster_id, "-c", str(config), *scram],
                capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage in {self.home} failed:\n"
                                   f"{(proc.stdout + proc.stderr)[-3000:]}")
        jit = [] if self.full_jit else [C1_ONLY]
        return ["java", *self.jvm_opts(), *JVM_OPTS, *jit, "-cp", cp, "kafka.Kafka", str(config)]

    def jvm_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}"]


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them (base64url of 16 bytes), never starting with
    '-': the storage tool would take such an id for an option ("--cluster-id: expected one
    argument"; 1 start in 64 failed so). Kafka's own Uuid.randomUuid() skips those too."""
    while (cluster_id := urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] == "-":
        pass
    return cluster_id


def start_apache_kafka(log_dir: Path, port: int | None = None, timeout: float = 120,
                       kafka: ApacheKafka | None = None) -> tuple[Service, str]:
    """Start Apache Kafka and wait until a client can produce and consume; returns (service,
    bootstrap) like runtime.broker.start_broker. The same port (or `kafka.home`) again
    restarts the same broker with its data. Ports this picks itself are picked again when
    another process took one during the JVM's start (seconds on a busy machine)."""
    for attempt in range(3):
        given = kafka
        if given is None:
            chosen = port or free_port()
            home = Path(log_dir) / f"apache-kafka-{chosen}"
            given = read_ports(home) or ApacheKafka(home, port=chosen)
        try:
            return _start(log_dir, given, timeout)
        except PortTaken:
            if port or kafka or attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    pass


def _start(log_dir: Path, kafka: ApacheKafka, timeout: float) -> tuple[Service, str]:
    from runtime.broker import round_trip

    argv = kafka.prepare()
    svc = Service(f"apache-kafka-{kafka.port}", argv, log_dir)
    seen = svc.log_path.stat().st_size if svc.log_path.exists() else 0  # a restart appends

    def log() -> str:
        with open(svc.log_path, "rb") as f:
            f.seek(seen)
            return f.read().decode(errors="replace")

    svc.start()
    try:
        # its own word first: another process may be listening on a port it could not bind
        wait_until(lambda: "Kafka Server started" in (text := log()) or "failed to bind" in text,
                   timeout, "Kafka's start", proc=svc, interval=0.2)
        if "failed to bind" in log():
            raise PortTaken(f"Kafka could not bind its ports (taken meanwhile): {svc.log_path}")
        if not round_trip(kafka.bootstrap, timeout):
            raise TimeoutError(f"Kafka on {kafka.bootstrap} accepted no produce/consume "
                               "round trip")
    except BaseException:
        svc.stop()
        raise
    return svc, kafka.bootstrap


def read_ports(home: Path) -> ApacheKafka | None:
    """The plaintext broker formerly configured in `home` (same ports, so its data fits)."""
    try:
        text = (home / "server.properties").read_text()
    except OSError:
        return None
    conf = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ports = {url.split("://")[0]: int(url.rsplit(":", 1)[1])
             for url in conf["listeners"].split(",")}
    return ApacheKafka(home, port=ports["PLAINTEXT"], controller_port=ports["CONTROLLER"])
