"""Deciding a wait from the statuses a WatchStatus stream brings: done, failed, or not yet.

`Goal` is the pure part (what counts as reached or failed, and the grace of retried
states); `StreamReader` lets the caller read a blocking stream with a timeout."""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from runtime.client.errors import Failed, NotFound, TimedOut
from runtime.kinds import FAILED, GONE, Kind, retried
from runtime.pb import scheduler_pb2 as pb

Progress = Callable[[pb.ResourceStatus], None]


@dataclass
class Goal:
    """Wait for `kind` `name` to be ready (`until="ready"`), gone, or in the state named by
    `until`, at `version` or later.

    Failed states (ModelFailed, PipelineFailed) end the wait at once. The retried states
    (ScheduleFailed, ExperimentWaiting, a pipeline's missing models) may pass: with
    `retry_grace` seconds, they fail the wait only once they have lasted that long; with
    None, ScheduleFailed fails at once and the others are waited through (the CLI's rule)."""

    kind: Kind
    name: str
    until: str = "ready"
    version: int = 0
    retry_grace: float | None = None
    progress: Progress = lambda s: None
    last: pb.ResourceStatus | None = None
    seen: bool = False
    failing_since: float | None = None

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"

    def see(self, s: pb.ResourceStatus | None) -> bool:
        """Take a status (None: the scheduler has no such resource); True when reached;
        raises Failed or NotFound when it never will be."""
        if s is not None and s.name != self.name:
            return False
        if s is not None and (self.last is None or
                              (s.state, s.reason) != (self.last.state, self.last.reason)):
            self.progress(s)
        if s is not None:
            self.last, self.seen = s, True
        if self.until == "gone":
            return s is None or s.state in GONE
        if s is None:
            raise NotFound(f"{self.what}: not found")
        if s.version < self.version:  # an older version's status: not what was applied
            return False
        if s.ready if self.until == "ready" else s.state == self.until:
            return True
        if s.state in FAILED or (self.retry_grace is None and s.state == "ScheduleFailed"):
            raise Failed(f"{self.what}: {s.state}: {s.reason or 'no reason given'}")
        self._grace(s)
        return False

    def _grace(self, s: pb.ResourceStatus) -> None:
        if self.retry_grace is None or not retried(s):
            self.failing_since = None
            return
        self.failing_since = self.failing_since or time.monotonic()
        self.check_grace()

    def grace_left(self) -> float | None:
        """Seconds until a retried state being waited through fails the wait."""
        if self.failing_since is None or self.retry_grace is None:
            return None
        return self.failing_since + self.retry_grace - time.monotonic()

    def check_grace(self) -> None:
        left = self.grace_left()
        if left is not None and left <= 0 and self.last is not None:
            raise Failed(f"{self.what}: {self.last.state}: {self.last.reason}")

    def timed_out(self, timeout: float) -> TimedOut:
        last = self.last
        state = f"{last.state}: {last.reason}".rstrip(": ") if last else "no status"
        return TimedOut(f"{self.what}: not {self.until} after {timeout:.0f}s "
                        f"(last state: {state})")


class StreamReader:
    """A gRPC response stream read on a thread, so items can be awaited with a timeout."""

    def __init__(self, call: Iterator[pb.ResourceStatus]):
        self.call = call
        self.items: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="status-stream").start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self.items.put(item)
            self.items.put(EOFError("the scheduler ended the status stream"))
        except grpc.RpcError as e:
            self.items.put(e)

    def next(self, timeout: float) -> pb.ResourceStatus | None:
        """The next status; None after `timeout` seconds without one; raises the stream's
        error (grpc.RpcError, or EOFError when it ended)."""
        try:
            item = self.items.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self.items.put(item)  # every later call raises it too
            raise item
        return item
