"""Idle pacing of a consumer whose broker holds no fetch open.

The embedded Tansu answers a fetch only when fetch.wait.max.ms ends (no wake-up on produce),
so its consumers fetch every few milliseconds: two idle dataflow services cost it a quarter
of a core. A paced consumer that has read nothing for IDLE_S pauses its partitions and looks
again every PROBE_S: it resumes them for one fetch and pauses them again unless records came.
Anything read, or `wake()` (a caller waiting for an answer), ends the doze. So a record
produced into a doze is read within PROBE_S; while records flow there is no delay at all.

A probe is two requests to the partitions' broker right after the resume. librdkafka fetches
a resumed partition only when its broker thread next looks, up to a second later (measured:
0.04-1 s); the first request makes it look at once, so the fetch goes out right behind it.
A broker answers a connection's requests in order, so the second request's answer comes after
that fetch's: whatever it brought is then in the consumer's queue, however slow the broker.

A consumer whose fetch the broker holds open (Apache Kafka: a long fetch wait, answered as
soon as a record arrives) costs nothing idle and is not paced.
"""

import time

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

# fetch waits up to this are polling: the broker is taken to hold no fetch open
POLLING_FETCH_MS = 20
# nothing read for this long: doze (long enough that a person's calls a few seconds apart
# never wait for a probe)
IDLE_S = 10.0
PROBE_S = 0.2       # a dozing consumer looks for records this often


class Pacer:
    """Driven by the consumer's own thread around each poll: `timeout(t)` before it, `read(n)`
    after it (n records read)."""

    def __init__(self, consumer: Consumer, fetch_wait_ms: int):
        self.consumer = consumer
        self.enabled = fetch_wait_ms <= POLLING_FETCH_MS
        self._last_read = time.monotonic()
        self._dozing = False
        self._probing = False      # resumed for one probe, until the next read()
        self._next_probe = 0.0
        self._woken = False

    @property
    def dozing(self) -> bool:
        return self._dozing

    def wake(self) -> None:
        """Any thread: records are expected soon; end the doze at the next poll."""
        self._woken = True

    def timeout(self, wanted: float) -> float:
        """The timeout for the next poll (at most `wanted`): a probe, or a woken consumer,
        resumes the partitions first."""
        if not self._dozing:
            return wanted
        now = time.monotonic()
        if self._woken:
            self._woken = False
            self._wake_up(now)
            return wanted
        if now < self._next_probe:
            # librdkafka waits whole milliseconds: 0.4 ms would be no wait, and a spin
            return max(0.001, min(wanted, self._next_probe - now))
        # the next probe is timed from this one's start, so a probe that could not be made
        # (no partitions, the broker away) is not tried again on every pass
        self._next_probe = now + PROBE_S
        self._probing = self._resume()
        return 0.0   # what the probe's fetch brought is queued already

    def read(self, count: int) -> None:
        now = time.monotonic()
        woken, self._woken = self._woken, False
        if count or woken:
            self._wake_up(now)
            return
        if not self.enabled:
            return
        if self._dozing:
            if self._probing:   # the probe found nothing
                self._pause()
                self._probing = False
        elif now - self._last_read >= IDLE_S:
            self._pause()
            self._dozing, self._next_probe = True, now + PROBE_S

    def _wake_up(self, now: float) -> None:
        if self._dozing:
            if not self._probing:   # (a probe has them resumed already)
                self._resume()
            self._dozing = self._probing = False
        self._last_read = now

    def _pause(self) -> None:
        # the whole assignment each time: partitions assigned meanwhile are paused too
        self.consumer.pause(self.consumer.assignment())

    def _resume(self) -> bool:
        """Resume the partitions and make the broker thread fetch them at once; True when the
        fetch was answered (the two requests of a probe, above)."""
        parts = self.consumer.assignment()
        if not parts:
            return False
        self.consumer.resume(parts)
        end = [TopicPartition(parts[0].topic, parts[0].partition, OFFSET_END)]
        try:
            for _ in range(2):   # the end offset: one small request to the broker
                self.consumer.offsets_for_times(end, timeout=1)
        except KafkaException:
            return False   # the broker away: fetching resumes on its own
        return True
