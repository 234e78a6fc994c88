"""Restart policy for the local platform's services: each service that exits is started again
after a backoff that doubles per crash; one that keeps crashing is reported CrashLoopBackOff
and waits the longest backoff between attempts, never restarted in a tight loop. Status comes
from the process and its readiness probe only, so it never says Ready for a dead service."""

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from runtime.procs import Service

# Service states, as `core2 status` shows them
STARTING = "Starting"        # process running, probe not passed yet
READY = "Ready"              # process running and its probe passed at the last look
NOT_READY = "NotReady"       # process running, probe failing since it was Ready
RESTARTING = "Restarting"    # exited; started again after the backoff
CRASH_LOOP = "CrashLoopBackOff"  # exited too often lately; retried at the longest backoff
STOPPED = "Stopped"


class RestartPolicy(BaseModel):
    """Local config key `supervision`."""

    model_config = ConfigDict(extra="forbid")
    backoffSeconds: float = Field(default=0.5, gt=0)     # first restart delay; doubles per exit
    maxBackoffSeconds: float = Field(default=30.0, gt=0)
    # a service up this long without exiting starts again from the first delay
    stableAfterSeconds: float = Field(default=30.0, gt=0)
    # this many exits within crashLoopWindowSeconds: CrashLoopBackOff
    crashLoopExits: int = Field(default=5, ge=1)
    crashLoopWindowSeconds: float = Field(default=120.0, gt=0)
    probeIntervalSeconds: float = Field(default=2.0, gt=0)


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Watched:
    """One supervised service and what has happened to it."""

    service: Service
    probe: Callable[[], bool]
    state: str = STARTING
    restarts: int = 0
    last_exit: dict | None = None
    started_at: float = field(default_factory=time.monotonic)
    next_start: float = 0.0
    waiting: bool = False                      # exited, recorded, not started again yet
    next_probe: float = 0.0
    consecutive: int = 0                       # exits since it was last stable
    exits: deque = field(default_factory=lambda: deque(maxlen=64))

    def view(self) -> dict:
        return {"state": self.state, "pid": self.service.pid if self.service.alive() else None,
                "restarts": self.restarts, "lastExit": self.last_exit}


class Supervision:
    """Watches services; call `tick()` often (the supervisor's loop does, every 100 ms)."""

    def __init__(self, policy: RestartPolicy | None = None,
                 log: Callable[[str], None] = lambda _: None):
        self.policy = policy or RestartPolicy()
        self.watched: dict[str, Watched] = {}
        self.log = log

    def watch(self, name: str, service: Service, probe: Callable[[], bool],
              ready: bool = False) -> None:
        self.watched[name] = Watched(service, probe, state=READY if ready else STARTING)

    def tick(self, now: float | None = None) -> bool:
        """One look at every service; returns whether anything changed."""
        changed = False
        for name, w in self.watched.items():
            now = time.monotonic() if now is None else now
            before = (w.state, w.restarts)
            if w.service.alive():
                self._look(w, now)
            elif w.waiting:
                if now >= w.next_start:
                    self._restart(name, w, now)
            elif w.state != STOPPED:
                self._exited(name, w, now)
            changed |= (w.state, w.restarts) != before
        return changed

    def _look(self, w: Watched, now: float) -> None:
        if now - w.started_at >= self.policy.stableAfterSeconds and w.state == READY:
            w.consecutive = 0
        if now < w.next_probe:
            return
        w.next_probe = now + self.policy.probeIntervalSeconds
        try:
            ok = w.probe()
        except Exception:  # a probe that raises is a failing probe, not a supervisor crash
            ok = False
        if ok:
            w.state = READY
        elif w.state == READY:
            w.state = NOT_READY
        # Starting stays Starting until its first pass

    def _exited(self, name: str, w: Watched, now: float) -> None:
        reason = exit_reason(w.service.returncode())
        tail = w.service.tail(1).strip()
        w.last_exit = {"reason": reason, "at": time.time(), "log": tail[-300:]}
        w.exits.append(now)
        w.consecutive += 1
        w.waiting = True
        window = self.policy.crashLoopWindowSeconds
        recent = sum(1 for t in w.exits if now - t <= window)
        delay = min(self.policy.maxBackoffSeconds,
                    self.policy.backoffSeconds * 2 ** (w.consecutive - 1))
        if recent >= self.policy.crashLoopExits:
            w.state, delay = CRASH_LOOP, self.policy.maxBackoffSeconds
            self.log(f"{name} {reason}; crash-looping ({recent} exits in {window:.0f}s): "
                     f"next try in {delay:.0f}s")
        else:
            w.state = RESTARTING
            self.log(f"{name} {reason}; restarting in {delay:.1f}s")
        w.next_start = now + delay

    def _restart(self, name: str, w: Watched, now: float) -> None:
        crash_looping = w.state == CRASH_LOOP
        try:
            w.service.start()
        except OSError as e:  # e.g. the binary is gone: counts as another exit
            w.last_exit = {"reason": f"could not start: {e}", "at": time.time(), "log": ""}
            w.next_start = now + self.policy.maxBackoffSeconds
            return
        w.restarts += 1
        w.waiting = False
        w.started_at, w.next_probe = now, now
        # A crash-looping service keeps showing it until it proves itself Ready.
        w.state = CRASH_LOOP if crash_looping else STARTING
        self.log(f"{name} restarted (pid {w.service.pid}, restart {w.restarts})")

    def stop_all(self) -> None:
        for w in reversed(list(self.watched.values())):
            w.service.stop()
            w.state = STOPPED

    def views(self) -> dict[str, dict]:
        return {name: w.view() for name, w in self.watched.items()}
