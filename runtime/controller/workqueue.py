"""A work queue of resource keys, as client-go's: a key queued many times is worked once, never
by two workers at a time, and can be queued again after a delay (retries, safety re-checks)."""

import heapq
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._order: deque[K] = deque()     # FIFO of dirty keys not being worked
        self._dirty: set[K] = set()     # queued (whether or not being worked)
        self._working: set[K] = set()
        self._later: list[tuple[float, int, K]] = []
        self._seq = 0
        self.closed = False

    def add(self, key: K) -> None:
        with self._cond:
            if key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._working:  # else done() queues it again
                self._order.append(key)
                self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._later, (time.monotonic() + delay, self._seq, key))
            self._cond.notify()

    def get(self) -> K | None:
        """The next key to work (call done(key) after), or None once closed."""
        with self._cond:
            while True:
                if self.closed:
                    return None
                self._move_due()
                if self._order:
                    key = self._order.popleft()
                    self._dirty.discard(key)
                    self._working.add(key)
                    return key
                wait = self._later[0][0] - time.monotonic() if self._later else None
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            self._working.discard(key)
            if key in self._dirty:  # changed while being worked: once more
                self._order.append(key)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._dirty) + len(self._working)

    def _move_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, _, key = heapq.heappop(self._later)
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._working:
                    self._order.append(key)
