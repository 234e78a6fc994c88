"""At-least-once bookkeeping for a consumer whose records produce other records: a record's
offset may be committed only once everything it produced (outputs or an error record) has
been acknowledged by the broker. Records finish out of order (model calls run concurrently),
so per partition only the longest prefix of finished records is stored; librdkafka's
auto-commit then commits what was stored (`enable.auto.offset.store` is off).

A crash therefore replays every record whose results were not yet acknowledged: duplicates are
possible, losses are not. Duplicates are harmless downstream: records are keyed by request id
and the pipeline gateway answers a request once."""

import logging
import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition

log = logging.getLogger(__name__)

Part = tuple[str, int]


class Token:
    """One consumed record: finished when it was released and all its produces are acked."""

    __slots__ = ("offset", "part", "pending", "released")

    def __init__(self, part: Part, offset: int):
        self.part, self.offset = part, offset
        self.pending = 0
        self.released = False


class OffsetTracker:
    def __init__(self, consumer: Consumer):
        self._consumer = consumer
        self._lock = threading.Lock()
        self._open: dict[Part, dict[int, Token]] = {}   # offset -> token, in consume order
        self._finished: dict[Part, int] = {}            # next offset to store, per partition

    def begin(self, topic: str, partition: int, offset: int) -> Token:
        token = Token((topic, partition), offset)
        with self._lock:
            self._open.setdefault(token.part, {})[offset] = token
        return token

    def produced(self, token: Token) -> None:
        """A produce was started on behalf of the record (call before produce())."""
        with self._lock:
            token.pending += 1

    def acked(self, token: Token) -> None:
        with self._lock:
            token.pending -= 1
            done = token.released and token.pending == 0
        if done:
            self._advance(token.part)

    def release(self, token: Token) -> None:
        """The service is done with the record (its produces, if any, were started)."""
        with self._lock:
            token.released = True
            done = token.pending == 0
        if done:
            self._advance(token.part)

    def forget(self, parts: list[Part]) -> None:
        """Partitions revoked: what was in flight for them will be consumed again by whoever
        gets them, so nothing more is stored for them here."""
        with self._lock:
            for part in parts:
                self._open.pop(part, None)
                self._finished.pop(part, None)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._open.values())

    def _advance(self, part: Part) -> None:
        with self._lock:
            tokens = self._open.get(part)
            if not tokens:
                return
            last = None
            for offset, token in list(tokens.items()):  # insertion order = consume order
                if not token.released or token.pending:
                    break
                last = offset
                del tokens[offset]
            if last is not None:
                self._finished[part] = last + 1

    def flush(self) -> None:
        """Store the offsets finished since the last call. Called by the consumer's own thread
        between polls: store_offsets from another thread waits on the consumer while it polls
        (measured: +50 ms p99 per hop when the model gateway's event loop stored them)."""
        with self._lock:
            finished, self._finished = self._finished, {}
        if not finished:
            return
        try:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in finished.items()])
        except KafkaException as e:  # revoked meanwhile: the new owner replays them
            log.debug("store offsets: %s", e)

    def produce(self, producer, token: Token | list[Token] | None, topic: str,
                **kwargs) -> None:
        """producer.produce on behalf of `token`'s record, or of several records (a join's
        output), or of none (None). A produce the broker refused is produced again: the
        records' offsets stay uncommitted until it is acknowledged, which is the point."""
        tokens = token if isinstance(token, list) else [token] if token is not None else []
        for t in tokens:
            self.produced(t)
        _produce(producer, topic, _Delivery(self, producer, topic, tokens, kwargs), kwargs)


class _Delivery:
    """A produce's delivery callback: acknowledges its records, or produces it again. An
    object rather than a closure that names itself: such a closure is a reference cycle, left
    (with the record's value) to the cyclic collector, whose passes then paused the engine
    under load."""

    __slots__ = ("kwargs", "producer", "tokens", "topic", "tracker")

    def __init__(self, tracker: OffsetTracker, producer, topic: str, tokens: list[Token],
                 kwargs: dict):
        self.tracker, self.producer, self.topic = tracker, producer, topic
        self.tokens, self.kwargs = tokens, kwargs

    def __call__(self, err, _msg) -> None:
        if err is not None:
            log.warning("produce to %s failed (%s); producing it again", self.topic, err)
            _produce(self.producer, self.topic, self, self.kwargs)
            return
        for t in self.tokens:
            self.tracker.acked(t)


def _produce(producer, topic: str, delivered, kwargs: dict) -> None:
    while True:
        try:
            producer.produce(topic, on_delivery=delivered, **kwargs)
            return
        except BufferError:  # local queue full: let deliveries drain it
            producer.poll(0.05)
