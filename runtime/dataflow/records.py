"""Record helpers shared by the dataflow services: headers, OIP JSON values, logging setup."""

import json
import logging
import signal
import threading

from confluent_kafka import Message

from runtime import tracing


def headers_of(msg: Message) -> dict[str, str]:
    return {k: (v.decode() if isinstance(v, bytes) else (v or ""))
            for k, v in (msg.headers() or [])}


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


def setup_service(name: str) -> threading.Event:
    """Logging, tracing, and a stop event set by SIGTERM/SIGINT, so consumers leave their group
    cleanly."""
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    tracing.init(f"core2-{name}")  # only when an OTLP endpoint is set
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# The longest a service's loop waits with nothing arriving (a record ends a poll's wait at
# once): how soon a pipeline change is taken up, and how often an idle service wakes.
IDLE_WAIT_S = 0.25


def next_batch(consumer, timeout: float, limit: int = 500) -> list:
    """Wait up to `timeout` for one record, then take what else is already fetched.
    (consume(n, timeout) would wait the whole timeout unless n records arrive: a fixed delay
    on every hop.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, timeout=0)]
