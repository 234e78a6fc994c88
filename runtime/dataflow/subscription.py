"""How a dataflow consumer gets its partitions, and what `assigned` means for readiness.

Two modes (KafkaConfig.assignment):
- "group": subscribe as a member of the consumer group; replicas share the partitions. For a
  real Kafka cluster with several replicas of a service.
- "static": one process takes every partition of its topics itself (assign) and resumes from
  the group's committed offsets. No group membership, so a restart reads again at once.
  Needed with the embedded Tansu broker: rejoining a group after a crash waits for the dead
  member's session to end and then for a join phase, and on a busy machine that wait was
  seen to last minutes (200 s measured; pipelines time out meanwhile: the CI failure of
  tests/dataflow/test_restarts.py).
"""

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from runtime.kafka import partitions_of

log = logging.getLogger(__name__)
# a partition with records to read whose position has not moved for this long is stalled
STALL_S = 10.0


class StallWatch:
    """Why a consumer's reading has stalled, or None: a partition has records past the
    position and the position has not moved for STALL_S. Seen with the embedded broker (Tansu,
    memory storage): a fetch scans every stored batch, and once a partition holds a few
    thousand a fetch outlasts fetch.wait.max.ms and returns nothing, for good.

    Split across two threads, so neither waits on the other: the consumer's own thread takes
    the positions (`sample`, between polls), and the topic guard's thread judges them against
    the high watermarks. A consumer call from another thread waits, spinning, until the poll
    under way returns; and the watermarks are asked through an admin client, since the
    consumer's ListOffsets would queue on its broker connection behind the waiting fetch
    (seen: 0.5-1 s stalls per hop at a 500 ms fetch wait, and 2 % of a core per idle
    service)."""

    def __init__(self, consumer: Consumer, partitions: Callable[[], list[TopicPartition]]):
        self.consumer, self._partitions = consumer, partitions
        self._moved: dict[tuple[str, int], tuple[int, float]] = {}  # -> (position, since)
        self._due = threading.Event()
        self._positions: list[TopicPartition] | None = None
        self._verdict: str | None = None

    def sample(self) -> None:
        """The consumer's thread: take the positions when the guard asked for them."""
        if self._due.is_set():
            self._due.clear()
            self._positions = self.consumer.position(self._partitions())

    def __call__(self, now: float, admin: AdminClient) -> str | None:
        """The guard's thread: judge the positions sampled since the last call (the last
        verdict if none were), and ask for new ones."""
        positions, self._positions = self._positions, None
        self._due.set()
        if positions is not None:
            self._verdict = self._judge(positions, now, admin)
        return self._verdict

    def _judge(self, positions: list[TopicPartition], now: float,
               admin: AdminClient) -> str | None:
        if not positions:
            return None
        highs = {(p.topic, p.partition): f for p, f in admin.list_offsets(
            {TopicPartition(p.topic, p.partition): OffsetSpec.latest() for p in positions},
            request_timeout=5).items()}
        for p in positions:
            key = (p.topic, p.partition)
            high = highs[key].result().offset
            last = self._moved.get(key)
            if p.offset < 0 or high <= p.offset or last is None or last[0] != p.offset:
                self._moved[key] = (p.offset, now)
            elif now - last[1] >= STALL_S:
                return (f"no records from the broker for {now - last[1]:.0f}s on {p.topic} at "
                        f"offset {p.offset} of {high}")
        return None


class Subscription:
    def __init__(self, consumer: Consumer, mode: str, offset_reset: str = "earliest",
                 on_revoked: Callable[[list[tuple[str, int]]], None] | None = None,
                 admin: AdminClient | None = None):
        self.consumer, self.mode = consumer, mode
        # metadata through another client: the consumer's would wait behind its fetch
        # (StallWatch), up to fetch.wait.max.ms per topic
        self._meta = admin or consumer
        self._reset = OFFSET_BEGINNING if offset_reset == "earliest" else OFFSET_END
        self._on_revoked = on_revoked or (lambda parts: None)
        self.wanted: list[str] = []
        self.assigned: set[str] = set()
        self._parts: dict[str, list[TopicPartition]] = {}
        self._fresh: set[str] = set()   # topics created again: read from their start
        self.stalled = StallWatch(consumer, self._partitions)

    def set_topics(self, topics: list[str]) -> None:
        """Consume exactly `topics` (sorted list); raises KafkaException if the broker is away
        (static mode reads metadata and committed offsets), so the caller retries."""
        topics = sorted(topics)
        if topics == self.wanted:
            return
        if self.mode == "group":
            self.wanted = topics
            if topics:
                self.consumer.subscribe(topics, on_assign=self._assign_cb,
                                        on_revoke=self._revoke_cb, on_lost=self._revoke_cb)
            else:
                self.consumer.unsubscribe()
                self._revoked(list(self._parts.values()))
                self._parts, self.assigned = {}, set()
            return
        gone = [t for t in self._parts if t not in topics]
        if gone:
            parts = [p for t in gone for p in self._parts[t]]
            self.consumer.incremental_unassign(parts)
            self._revoked([parts])
            for t in gone:
                del self._parts[t]
        new = [t for t in topics if t not in self._parts]
        if new:
            parts = []
            for t in new:
                parts += [TopicPartition(t, p) for p in partitions_of(self._meta, t)]
            committed = self.consumer.committed(parts, timeout=10)
            for p in committed:
                if p.topic in self._fresh:
                    # what the group committed was for the topic that is gone (librdkafka's
                    # auto-commit even writes those offsets to a restarted broker): resuming
                    # there would skip the new topic's first records
                    p.offset = OFFSET_BEGINNING
                elif p.offset < 0:  # nothing committed yet for the group
                    p.offset = self._reset
            self.consumer.incremental_assign(committed)
            self._fresh -= set(new)
            for p in committed:
                self._parts.setdefault(p.topic, []).append(p)
        self.wanted = topics
        self.assigned = set(self._parts)

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition) for ps in list(self._parts.values())
                for p in ps]

    def reread(self, renewed: set[str] | frozenset = frozenset()) -> None:
        """Read the topics afresh: drop every partition and take them back, `renewed` ones
        (created again) from their start, the others from the group's committed offsets or
        the start. (Group mode resumes from the committed offsets.)"""
        self._fresh |= set(renewed)
        wanted = self.wanted
        if self.mode == "group":
            self.consumer.unsubscribe()
        else:
            self.consumer.unassign()
        self._revoked(list(self._parts.values()))
        self._parts, self.assigned, self.wanted = {}, set(), []
        self.set_topics(wanted)

    # -- group mode callbacks -------------------------------------------------------------
    def _assign_cb(self, _consumer, partitions) -> None:
        for p in partitions:
            self._parts.setdefault(p.topic, []).append(p)
        self.assigned = set(self._parts)
        log.info("assigned %d partitions", len(partitions))

    def _revoke_cb(self, _consumer, partitions) -> None:
        self._revoked([partitions])
        for p in partitions:
            kept = [q for q in self._parts.get(p.topic, []) if q.partition != p.partition]
            if kept:
                self._parts[p.topic] = kept
            else:
                self._parts.pop(p.topic, None)
        self.assigned = set(self._parts)

    def _revoked(self, groups: list[list[TopicPartition]]) -> None:
        self._on_revoked([(p.topic, p.partition) for parts in groups for p in parts])
