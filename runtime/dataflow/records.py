"""Record helpers shared by the dataflow services: headers, keys, OIP JSON values, polls."""

import json
import logging

from confluent_kafka import Consumer, KafkaError, Message

log = logging.getLogger("dataflow")


def headers_of(msg: Message) -> dict[str, str]:
    # a consumed record's headers are always a list of pairs (a dict only when producing)
    pairs: list = list(msg.headers() or [])
    return {k: (v.decode() if isinstance(v, bytes) else (v or "")) for k, v in pairs}


def position(msg: Message) -> tuple[str, int, int]:
    """A consumed record's topic, partition and offset (never unset on one)."""
    return msg.topic() or "", msg.partition() or 0, msg.offset() or 0


def key_of(msg: Message) -> str:
    k = msg.key()
    return k.decode() if isinstance(k, bytes) else (k or "")


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(value: bytes | None) -> dict | None:
    """The JSON object in `value`, or None (not JSON, not an object, or nested so deeply
    that the parser gives up: RecursionError, which must not escape as a 500)."""
    try:
        doc = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


# The longest a service's loop waits with nothing arriving (a record ends a poll's wait at
# once): how soon a pipeline change is taken up, and how often an idle service wakes.
IDLE_WAIT_S = 0.25


def next_batch(consumer: Consumer, timeout: float, limit: int = 500) -> list[Message]:
    """Wait up to `timeout` for one record, then take what else is already fetched; error
    events are logged, not returned. (consume(n, timeout) would wait the whole timeout unless
    n records arrive: a fixed delay on every hop.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    out = []
    for msg in [first, *consumer.consume(limit - 1, timeout=0)]:
        err = msg.error()
        if err is None:
            out.append(msg)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume: %s", err)
    return out
