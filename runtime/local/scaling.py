"""Local server autoscaling: the supervisor starts and stops server replicas to the count the
scheduler's server autoscaler wants (a Server's status, `detail.autoscaling.replicas`). The
scheduler lowers the count only once the leaving replica is drained, so stopping it fails no
request; a new replica's agent connects and the scheduler places models on it."""

import time
from collections.abc import Callable

from runtime.client import SchedulerClient, SchedulerError, autoscaled_replicas
from runtime.local.platform import Platform

LOOK_EVERY_S = 1.0
AFTER_FAILURE_S = 5.0  # the scheduler away or slow: the supervision loop must not wait on it


class ReplicaFollower:
    def __init__(self, platform: Platform, started: Callable[[list[str]], None],
                 stopped: Callable[[list[str]], None], log: Callable[[str], None]):
        self.platform, self.started, self.stopped, self.log = platform, started, stopped, log
        self._client: SchedulerClient | None = None
        self._next = 0.0

    def tick(self) -> bool:
        """One look (at most every LOOK_EVERY_S); returns whether a replica started or stopped."""
        if not self.platform.config.autoscaling.servers or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + LOOK_EVERY_S
        if self._client is None:
            self._client = SchedulerClient(self.platform.scheduler_address, timeout=1)
        try:
            statuses = self._client.status("Server")
        except SchedulerError:
            self._next = time.monotonic() + AFTER_FAILURE_S  # restarting: look again later
            return False
        changed = False
        for status in statuses:
            wanted = autoscaled_replicas(status)
            server = self.platform.servers.get(status.name)
            if wanted is not None and server is not None:
                changed |= self._follow(server.name, wanted)
        return changed

    def _follow(self, name: str, wanted: int) -> bool:
        server = self.platform.servers[name]
        running = self.platform.running_replicas(name)
        for idx in range(wanted):
            if idx not in running:
                self.log(f"server {name}: starting replica {idx} (autoscaling to {wanted})")
                self.started(self.platform.start_replica(server, idx))
        for idx in running:
            if idx >= wanted:
                self.log(f"server {name}: stopping drained replica {idx} (autoscaling to "
                         f"{wanted})")
                self.stopped(self.platform.stop_replica(server, idx))
        return wanted != len(running)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
