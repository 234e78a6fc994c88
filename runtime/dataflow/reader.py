"""The consumer side of a service that turns records into other records (the engine, the model
gateway), driven by one thread between its polls: its partitions (runtime.dataflow.subscription),
at-least-once offsets (runtime.dataflow.offsets), and the topic guard that notices a broker
restart (runtime.dataflow.topicguard). A step that fails (broker away) is tried again on the
loop's next pass, so the loop keeps polling, reporting and stopping meanwhile."""

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message

from runtime import kafka
from runtime.dataflow.kafkastats import KAFKA_REQUESTS
from runtime.dataflow.offsets import OffsetTracker
from runtime.dataflow.pacing import Pacer
from runtime.dataflow.records import IDLE_WAIT_S, next_batch
from runtime.dataflow.subscription import Subscription
from runtime.dataflow.topicguard import TopicGuard
from runtime.kafka import KafkaConfig

log = logging.getLogger("dataflow")
RETRY_PASS_S = 1.0   # after a failed step, the wait before the next pass tries it again


class Reader:
    def __init__(self, cfg: KafkaConfig, group: str, written: Callable[[], set[str]],
                 stop: threading.Event):
        self.cfg, self.stop = cfg, stop
        # the guard checks what is read and `written` exist, and hears of a lost broker from
        # the consumer at once (readiness follows it)
        self.guard = TopicGuard(cfg, lambda: set(self.sub.wanted), written)
        self.consumer = Consumer({**cfg.consumer(group), "error_cb": self._on_error,
                                  **KAFKA_REQUESTS.config("consumer")})
        self.tracker = OffsetTracker(self.consumer)
        self.sub = Subscription(self.consumer, cfg.resolved_assignment(),
                                on_revoked=self.tracker.forget, admin=self.guard.admin)
        self.guard.progress = self.sub.stalled
        self.pacer = Pacer(self.consumer, cfg.fetch_wait_ms)
        log.info("partition assignment: %s", self.sub.mode)
        self.guard.start(stop)

    def _on_error(self, err: KafkaError) -> None:
        kafka.report_error(self.cfg, err)  # a wrong setting named, as for every client
        self.guard.client_error(err)

    def _attempt(self, what: str, step: Callable[[], None]) -> bool:
        try:
            step()
            return True
        except Exception as e:
            log.warning("%s failed (%s); retrying", what, e)
            self.stop.wait(RETRY_PASS_S)
            return False

    def ensure(self, topics: list[str], whose: str = "") -> bool:
        """Create the topics that are missing; False (logged, naming `whose` they are) if
        the broker would not."""
        return self._attempt(f"{whose + ': ' if whose else ''}creating {len(topics)} topics",
                             lambda: kafka.ensure_topics(self.cfg, topics))

    def read(self, topics: list[str]) -> bool:
        """Read exactly `topics` from now on; False (logged) if the broker would not."""
        def step() -> None:
            self.sub.set_topics(topics)
            self.guard.remember(topics)
        return self._attempt(f"reading {len(topics)} topics", step)

    def reread_if_lost(self, before: Callable[[], None] | None = None) -> None:
        """After topics were created again (broker restart), read them afresh; `before` is
        told first (readiness)."""
        if not self.guard.lost.is_set():
            return
        if before is not None:
            before()
        self.guard.lost.clear()

        def step() -> None:
            self.sub.reread(self.guard.take_renewed())
            self.guard.remember(self.sub.wanted)
            log.info("reading %d topics afresh", len(self.sub.wanted))
        if not self._attempt("reading topics afresh", step):
            self.guard.lost.set()

    def fetch(self, timeout: float) -> list[Message]:
        """The records of one poll (waiting up to `timeout` for the first; less while the
        consumer dozes, runtime.dataflow.pacing). With nothing to read the poll still serves
        the clients' error callbacks (a wrong password is reported before any pipeline)."""
        if not self.sub.wanted:
            self.consumer.poll(IDLE_WAIT_S)
            return []
        msgs = next_batch(self.consumer, self.pacer.timeout(timeout))
        self.pacer.read(len(msgs))
        return msgs

    def end_pass(self) -> None:
        """Between polls: the positions the stall watch asked for, and the offsets finished."""
        self.sub.stalled.sample()
        self.tracker.flush()

    def close(self) -> None:
        """Leave: the offsets stored so far are committed; unfinished records are read again
        by the next reader."""
        self.tracker.flush()
        self.consumer.close()
