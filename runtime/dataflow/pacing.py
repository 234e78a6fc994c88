"""Idle pacing of a consumer whose broker holds no fetch open.

The embedded Tansu answers a fetch only when fetch.wait.max.ms ends (no wake-up on produce),
so its consumers fetch every few milliseconds: two idle dataflow services cost it a quarter
of a core. A paced consumer that has read nothing for IDLE_S pauses its partitions and looks
again every PROBE_S: it resumes them for a few fetches and pauses them again unless records
came. Anything read, or `wake()` (a caller waiting for an answer), ends the doze. So a record
produced into a doze is read within PROBE_S; while records flow there is no delay at all.

A consumer whose fetch the broker holds open (Apache Kafka: a long fetch wait, answered as
soon as a record arrives) costs nothing idle and is not paced.
"""

import time

from confluent_kafka import Consumer, KafkaException

# fetch waits up to this are polling: the broker is taken to hold no fetch open
POLLING_FETCH_MS = 20
IDLE_S = 2.0        # nothing read for this long: doze
PROBE_S = 0.2       # a dozing consumer looks for records this often


class Pacer:
    """Driven by the consumer's own thread around each poll: `timeout(t)` before it, `read(n)`
    after it (n records read)."""

    def __init__(self, consumer: Consumer, fetch_wait_ms: int):
        self.consumer = consumer
        self.enabled = fetch_wait_ms <= POLLING_FETCH_MS
        # a probe lasts about one fetch: the broker's wait, and the way there and back
        self._probe_for = fetch_wait_ms / 1000 + 0.002
        self._last_read = time.monotonic()
        self._dozing = False
        self._probe_until = 0.0   # while probing: when the probe ends
        self._next_probe = 0.0
        self._woken = False

    @property
    def dozing(self) -> bool:
        return self._dozing

    def wake(self) -> None:
        """Any thread: records are expected soon; end the doze at the next poll."""
        self._woken = True

    def timeout(self, wanted: float) -> float:
        """The timeout for the next poll (at most `wanted`); resumes the partitions when a
        probe is due or the consumer was woken."""
        if not self._dozing:
            return wanted
        now = time.monotonic()
        if self._woken:
            self._woken = False
            self._wake_up(now)
            return wanted
        if self._probe_until:
            until = self._probe_until
        elif now >= self._next_probe:
            self._resume()
            until = self._probe_until = now + self._probe_for
        else:
            until = self._next_probe
        # librdkafka waits whole milliseconds: 0.4 ms would be no wait, and a spin
        return max(0.001, min(wanted, until - now))

    def read(self, count: int) -> None:
        now = time.monotonic()
        woken, self._woken = self._woken, False
        if count or woken:
            self._wake_up(now)
            return
        if not self.enabled:
            return
        if self._dozing:
            if self._probe_until and now >= self._probe_until:   # a probe found nothing
                self._pause()
                self._probe_until, self._next_probe = 0.0, now + PROBE_S
        elif now - self._last_read >= IDLE_S:
            self._pause()
            self._dozing, self._next_probe = True, now + PROBE_S

    def _wake_up(self, now: float) -> None:
        if self._dozing:
            if not self._probe_until:   # (a probe has them resumed already)
                self._resume()
            self._dozing, self._probe_until = False, 0.0
        self._last_read = now

    def _pause(self) -> None:
        # the whole assignment each time: partitions assigned meanwhile are paused too
        self.consumer.pause(self.consumer.assignment())

    def _resume(self) -> None:
        parts = self.consumer.assignment()
        if not parts:
            return
        self.consumer.resume(parts)
        # librdkafka fetches a resumed partition only when its broker thread next looks, up
        # to a second later (measured: 0.04-1 s); any request to the broker makes it look at
        # once (then 1.4-2.4 ms to a waiting record). The embedded broker is one node.
        try:
            self.consumer.get_watermark_offsets(parts[0], timeout=1, cached=False)
        except KafkaException:
            pass  # the broker away: fetching resumes on its own
