"""What the CLI asks of a local platform it did not start in-process: start a Server's
replicas (the supervisor does it), let the agents fetch from the folders of applied
manifests, and stop the platform, signalling only processes that are still core2's."""

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.local.config import LocalServer
from runtime.local.detach import wait_for_services
from runtime.local.roots import remember_manifest_folders
from runtime.local.state import STATE_FILE, is_ours, pid_alive, read_state
from runtime.local.supervisor import request_server


class NotRunning(RuntimeError):
    """No supervisor runs for this run dir."""


def admit_manifest_folders(run_dir: Path, manifests: list[str]) -> None:
    """The agents may fetch from the folders of manifests the user applies (relative
    storageUris point there)."""
    if read_state(run_dir):
        remember_manifest_folders(run_dir, manifests)


def start_server(run_dir: Path, name: str, spec: dict, timeout: float,
                 progress: Callable[[str], None] = lambda _: None) -> bool:
    """A Server manifest applied to a local platform also starts its replicas: ask the
    supervisor and wait until they are Ready. False when the server already runs."""
    state = read_state(run_dir) or {}
    if name in {k.rsplit("-", 1)[0] for k in state.get("replicas", {})}:
        return False
    if not is_ours(state.get("supervisor"), state.get("startTimes", {})):
        raise NotRunning("the local supervisor is not running: `core2 up` first")
    server = LocalServer(name=name, **spec)
    progress(f"starting {server.replicas} replica(s) of server {name}")
    request = request_server(run_dir, server)
    names = [f"{name}-{i}-{part}" for i in range(server.replicas)
             for part in (server.serverConfig, "agent")]
    wait_for_services(run_dir, names, request, timeout=timeout)
    return True


@dataclass
class Stopped:
    """What `stop` did: the services stopped (none: nothing recorded was still running), pids
    left alone (recorded, but now another program's), and those still alive after SIGKILL."""

    services: list[str] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)


def stop(run_dir: Path, timeout: float = 30) -> Stopped | None:
    """Stop a platform started with `core2 up [--detach]`: SIGTERM to its supervisor, which
    stops what it started; then any service process group still alive (the supervisor was
    killed, or did not finish in time) is ended too. None when nothing is recorded."""
    state = read_state(run_dir)
    if not state:
        return None
    done = Stopped()
    recorded = state.get("startTimes", {})
    supervisor = state.get("supervisor")
    supervised = bool(supervisor and is_ours(supervisor, recorded))
    if supervisor and supervised:
        _end([supervisor], os.kill, timeout)  # it stops every service it started
        state = read_state(run_dir) or state  # restarts may have changed pids meanwhile
        recorded = state.get("startTimes", recorded)
    elif supervisor and pid_alive(supervisor):
        done.foreign.append(supervisor)
    pids = {n: p for n, p in state.get("pids", {}).items() if p}
    ours = {n: p for n, p in pids.items() if is_ours(p, recorded)}
    foreign = {n: p for n, p in pids.items() if n not in ours and pid_alive(p)}
    done.foreign += foreign.values()
    _end(list(reversed(ours.values())), os.killpg, 10)  # their process groups
    done.survivors = [p for p in ours.values() if pid_alive(p)]
    if not done.survivors:
        (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
    stopped = state.get("services", pids) if supervised else ours
    done.services = [n for n in stopped if n not in foreign]
    return done


def _end(pids: list[int], kill: Callable[[int, int], None], timeout: float) -> None:
    """SIGTERM each, then SIGKILL what is still alive after `timeout` seconds."""
    for pid in pids:
        _signal(kill, pid, signal.SIGTERM)
    if not _wait_gone(pids, timeout):
        for pid in pids:
            if pid_alive(pid):
                _signal(kill, pid, signal.SIGKILL)
        _wait_gone(pids, 5)


def _signal(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except OSError:
        pass  # gone meanwhile


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def running(run_dir: Path) -> bool:
    """Is a platform of this run dir up: its supervisor, or any service it recorded?"""
    state = read_state(run_dir) or {}
    recorded = state.get("startTimes", {})
    return any(is_ours(p, recorded) for p in [state.get("supervisor"),
                                               *state.get("pids", {}).values()])
