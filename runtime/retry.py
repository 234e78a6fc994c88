"""The one retry helper: call until it works, with capped exponential back-off, until a
deadline, a number of attempts, or a stop flag ends it. Sync and async forms."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class GaveUp(Exception):
    """Raised with the last error as __cause__ when the deadline or attempts ran out."""


@dataclass
class Retry:
    """What to retry and for how long: `timeout` seconds and/or `attempts` tries, delays
    from `first` doubling up to `cap`; `stop()` true ends it early. Failures after the first
    `quiet_tries` are logged at WARNING, earlier ones at DEBUG."""

    what: str
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    attempts: int | None = None
    first: float = 0.1
    cap: float = 5.0
    stop: Callable[[], bool] = lambda: False
    quiet_tries: int = 1
    _started: float = field(default_factory=time.monotonic, init=False)
    _tries: int = field(default=0, init=False)

    def wait_after(self, err: BaseException) -> float:
        """Seconds to wait before the next try, or GaveUp."""
        self._tries += 1
        delay = min(self.cap, self.first * 2 ** (self._tries - 1))
        elapsed = time.monotonic() - self._started
        left = None if self.timeout is None else self.timeout - elapsed
        if (self.attempts is not None and self._tries >= self.attempts) or \
                (left is not None and left <= 0) or self.stop():
            raise GaveUp(f"{self.what}: gave up after {self._tries} tries in {elapsed:.1f}s: "
                         f"{err}") from err
        log.log(logging.WARNING if self._tries > self.quiet_tries else logging.DEBUG,
                "%s failed (try %d), retrying in %.1fs: %s", self.what, self._tries, delay, err)
        return delay if left is None else min(delay, left)


def retry(call: Callable[[], T], policy: Retry) -> T:
    """`call()`'s result, retried on `policy.retry_on` until it works or GaveUp."""
    while True:
        try:
            return call()
        except policy.retry_on as e:
            time.sleep(policy.wait_after(e))


async def retry_async(call: Callable[[], Awaitable[T]], policy: Retry) -> T:
    """`retry` for coroutines: the waits do not block the event loop."""
    while True:
        try:
            return await call()
        except policy.retry_on as e:
            await asyncio.sleep(policy.wait_after(e))
