"""The local supervisor: starts the platform, keeps every service running (supervision.py) and
records what it sees in `<run-dir>/state.json` for `core2 status` and `core2 down`.

`core2 up` runs it in the foreground; `core2 up --detach` starts it as its own process:

    python -m runtime.local.supervisor --run-dir DIR --config-json FILE

SIGTERM (what `core2 down` sends) stops every service it started, then the supervisor."""

import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from runtime import logs
from runtime.local.config import LocalConfig, LocalServer
from runtime.local.detach import PROGRESS
from runtime.local.platform import Platform
from runtime.local.scaling import ReplicaFollower
from runtime.local.supervision import Supervision
from runtime.settings import ServiceSettings, load

REQUESTS = "requests"     # other processes (e.g. `core2 apply` of a Server) ask for work here
HEARTBEAT_S = 2.0         # state.json is rewritten at least this often while supervising
STARTING, UP = "starting", "up"


class _Stop(BaseException):
    """SIGTERM while the platform is still starting: unwind through Platform.start's cleanup."""


class Supervisor:
    def __init__(self, platform: Platform, log: Callable[[str], None] = print):
        self.platform = platform
        self.log = log
        self.supervision = Supervision(platform.config.supervision, log=log)
        self.phase = STARTING
        self.stopping = False
        self._saved = 0.0
        self.scaling = ReplicaFollower(platform, self._watch, self._unwatch, log)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        self.save()  # `core2 down` can find (and stop) us while the services start
        self.platform.start(progress)
        for name, svc in self.platform.services.items():
            self.supervision.watch(name, svc, self.platform.probes[name], ready=True)
        self.phase = UP
        self.save()

    def run(self) -> None:
        """Supervise until `stop()` (a signal handler) is called."""
        while not self.stopping:
            changed = self.supervision.tick()
            changed |= self._take_requests()
            changed |= self.scaling.tick()
            if changed or time.monotonic() - self._saved >= HEARTBEAT_S:
                self.save()
            time.sleep(0.1)

    def stop(self) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        self.scaling.close()
        self.supervision.stop_all()
        self.platform.stop()  # also removes state.json

    # ---- state --------------------------------------------------------------------------
    def save(self) -> None:
        services = self.supervision.views()
        for name, svc in self.platform.services.items():  # not watched yet: starting up
            services.setdefault(name, {"state": "Starting", "pid": svc.pid, "restarts": 0,
                                       "lastExit": None})
        self.platform.save_state({"supervisor": os.getpid(), "phase": self.phase,
                                  "updated": time.time(), "services": services})
        self._saved = time.monotonic()

    # ---- requests -----------------------------------------------------------------------
    def _take_requests(self) -> bool:
        folder = self.platform.run_dir / REQUESTS
        if self.phase != UP or not folder.is_dir():
            return False
        changed = False
        for path in sorted(folder.glob("*.json")):
            try:
                request = json.loads(path.read_text())
                self._add_server(LocalServer.model_validate(request["server"]))
                changed = True
            except Exception as e:  # a bad request is answered, never fatal
                path.with_suffix(".error").write_text(f"{type(e).__name__}: {e}")
                self.log(f"request {path.name} refused: {e}")
            path.unlink(missing_ok=True)
        return changed

    def _add_server(self, server: LocalServer) -> None:
        if self.platform.running_replicas(server.name):
            return
        self.log(f"starting {server.replicas} replica(s) of server {server.name}")
        self._watch(self.platform._start_server(server))

    def _watch(self, names: list[str]) -> None:
        for name in names:
            self.supervision.watch(name, self.platform.services[name],
                                   self.platform.probes[name])

    def _unwatch(self, names: list[str]) -> None:
        for name in names:
            self.supervision.watched.pop(name, None)


def request_server(run_dir: Path, server: LocalServer) -> Path:
    """Ask a running supervisor to start a server's replicas; returns the request's path (an
    `.error` file beside it answers a refusal)."""
    folder = Path(run_dir) / REQUESTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"server": server.model_dump(exclude_none=True)}))
    tmp.rename(path)  # the supervisor never reads half a request
    return path


def supervise(run_dir: Path, config: LocalConfig, progress: Callable[[str], None],
              on_up: Callable[[Platform], None] = lambda _: None,
              log: Callable[[str], None] = print) -> int:
    """Start, supervise until SIGTERM/SIGINT, stop everything. Returns an exit status;
    raises RuntimeError/TimeoutError when the platform does not start (nothing left running)."""
    supervisor = Supervisor(Platform(run_dir, config), log=log)

    def during_start(*_):
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, during_start)
    try:
        try:
            supervisor.start(progress)  # RuntimeError/TimeoutError: the caller reports them
        except _Stop:
            return 143
        signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
        on_up(supervisor.platform)
        try:
            supervisor.run()
        except KeyboardInterrupt:
            pass
        log("stopping core2")
        supervisor.shutdown()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


class SupervisorSettings(ServiceSettings):
    run_dir: Path = Field(description="the platform's run dir (state.json, logs/)")
    config_json: Path = Field(description="a validated LocalConfig as JSON (written by "
                                          "`core2 up`)")


def main(argv: list[str] | None = None) -> int:
    settings = load(SupervisorSettings, "python -m runtime.local.supervisor", argv)
    logs.setup("supervisor", settings.log_level)
    config = LocalConfig.model_validate_json(settings.config_json.read_text())
    log = logging.getLogger("supervisor")
    try:
        # `core2 up -d` relays the lines carrying PROGRESS from this log (detach._relay)
        return supervise(settings.run_dir, config, progress=lambda m: log.info(PROGRESS + m),
                         log=log.info)
    except (RuntimeError, TimeoutError, OSError) as e:
        log.error("error: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
