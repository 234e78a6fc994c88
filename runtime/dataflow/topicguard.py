"""Recovery from vanished topics. The embedded broker keeps topics in memory, so a broker
restart loses them all; nothing would create them again (services create topics only when a
pipeline is set) and every pipeline would time out for good. A guard thread per service
checks every few seconds that the topics the service reads and writes exist, creates the
missing ones, and flags `lost` when one it reads was among them, so the service reads its
topics afresh (offsets start over on a new topic)."""

import logging
import os
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from runtime.kafka import KafkaConfig, ensure_topics

log = logging.getLogger(__name__)
# how often the consumer's progress is checked (a stall counts after STALL_S = 10 s): each
# check asks the broker for every partition's end, a cost an idle service should not pay
# every pass
PROGRESS_EVERY_S = 5.0


class TopicGuard:
    def __init__(self, cfg: KafkaConfig, read: Callable[[], set[str]],
                 written: Callable[[], set[str]], interval: float | None = None):
        self.cfg = cfg
        # seconds between checks (env CORE2_TOPIC_CHECK_SECONDS; 0 turns the checks off)
        self.interval = (float(os.environ.get("CORE2_TOPIC_CHECK_SECONDS", "2"))
                         if interval is None else interval)
        self._read, self._written = read, written
        self._ids: dict[str, str] = {}   # topic -> the id it had when last seen
        self._lock = threading.Lock()
        self.admin = AdminClient(cfg.common())
        self.lost = threading.Event()
        self.down = threading.Event()   # the last check could not reach the broker
        self._renewed: set[str] = set()
        self._wake = threading.Event()
        # set by the service: why its reading stalled, or None (Subscription.stalled)
        self.progress: Callable[[float, AdminClient], str | None] | None = None
        self.stall: str | None = None

    def remember(self, topics: list[str]) -> None:
        """Record the ids of topics the service starts reading (call right after assigning
        them, before reporting ready), so a broker restart at any later moment is noticed.
        Best effort: an unanswered lookup leaves it to the next pass."""
        try:
            ids = self._describe(self.admin, sorted(topics))
        except Exception as e:
            log.debug("topic ids: %s", e)
            return
        with self._lock:
            self._ids.update({t: i for t, i in ids.items() if i is not None})

    def take_renewed(self) -> set[str]:
        """The read topics found created again since the last call (to read from their
        start)."""
        with self._lock:
            out, self._renewed = self._renewed, set()
        return out

    def start(self, stop: threading.Event) -> "TopicGuard":
        if self.interval <= 0:
            return self
        threading.Thread(target=self._run, args=(stop,), name="topic-guard",
                         daemon=True).start()
        return self

    def client_error(self, err: KafkaError) -> None:
        """A Kafka client's error_cb: on losing the broker, count it as down and check again
        now (rather than at the next interval), so readiness follows at once."""
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.down.set()
            self._wake.set()

    def _run(self, stop: threading.Event) -> None:
        checked = -PROGRESS_EVERY_S
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.check(self.admin)
                self.down.clear()
                now = time.monotonic()
                if self.progress is not None and now - checked >= PROGRESS_EVERY_S:
                    checked = now
                    self.stall = self.progress(now, self.admin)
            except Exception as e:
                log.debug("topic check: %s", e)
                self.down.set()

    def check(self, admin: AdminClient) -> None:
        """One pass. A topic read by the service counts as lost when it is missing or has a
        new topic id: another service may have created it again already, between passes."""
        read, written = self._read(), self._written()
        topics = sorted(read | written)
        if not topics:
            return
        ids = self._describe(admin, topics)
        missing = sorted(t for t, i in ids.items() if i is None)
        if missing:
            log.warning("%d topics are gone (broker restarted?): creating them again, e.g. %s",
                        len(missing), missing[0])
            ensure_topics(self.cfg, missing, timeout=5)
        with self._lock:
            renewed = {t for t in read if t in self._ids and ids.get(t) != self._ids[t]}
            renewed |= set(missing) & read
            self._ids.update({t: i for t, i in ids.items() if i is not None})
            for t in missing:
                self._ids.pop(t, None)
        if renewed:
            with self._lock:
                self._renewed |= renewed
            log.warning("%d topics this service reads were created again: reading them afresh",
                        len(renewed))
            self.lost.set()

    @staticmethod
    def _describe(admin: AdminClient, topics: list[str]) -> dict[str, str | None]:
        """topic -> its topic id and partition count, or None when the broker does not know
        it."""
        ids: dict[str, str | None] = {}
        for topic, fut in admin.describe_topics(TopicCollection(topics),
                                                request_timeout=5).items():
            try:
                # the partition count is part of the identity: a broker that auto-created a
                # topic (with its own default count) before the guard did, or partitions
                # added, must be read afresh, or records on the new partitions go unread
                found = fut.result()
                ids[topic] = f"{found.topic_id}/{len(found.partitions)}"
            except KafkaException as e:
                if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                ids[topic] = None
        return ids
