"""`core2 up --detach`: start the supervisor as its own process (it outlives the command) and
wait until it reports the platform up, relaying its progress."""

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from runtime.local.config import LocalConfig
from runtime.local.platform import START_TIMEOUT_S
from runtime.local.state import read_state
from runtime.local.supervision import READY, exit_reason
from runtime.procs import python_module

PROGRESS = "progress: "


def start_detached(run_dir: Path, config: LocalConfig,
                   progress: Callable[[str], None]) -> dict:
    """Returns the state once the supervisor says `up`; raises RuntimeError (with its log's
    tail) if it exits first or does not get there in time."""
    run_dir = Path(run_dir).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.json"  # already validated: the supervisor just reads it
    config_file.write_text(config.model_dump_json())
    log_path = run_dir / "logs" / "supervisor.log"
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            python_module("runtime.local.supervisor", "--run-dir", str(run_dir),
                          "--config-json", str(config_file)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True)  # Ctrl-C in this terminal must not reach it
    deadline = time.monotonic() + START_TIMEOUT_S + 30
    while True:
        offset = _relay(log_path, offset, progress)
        state = read_state(run_dir)
        if state and state.get("supervisor") == proc.pid and state.get("phase") == "up":
            return state
        if proc.poll() is not None:
            _relay(log_path, offset, progress)
            raise RuntimeError(f"core2 did not start (supervisor {exit_reason(proc.returncode)})"
                               f":\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            proc.terminate()  # it stops whatever it started
            proc.wait(30)
            raise RuntimeError(f"core2 did not start in {START_TIMEOUT_S + 30}s; see {log_path}")
        time.sleep(0.1)


def wait_for_services(run_dir: Path, names: list[str], request: Path, timeout: float) -> None:
    """Wait until the supervisor reports every named service Ready (after `request`)."""
    error = request.with_suffix(".error")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if error.exists():
            raise RuntimeError(f"the supervisor refused: {error.read_text()}")
        services = (read_state(run_dir) or {}).get("services", {})
        if all(services.get(n, {}).get("state") == READY for n in names):
            return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(names)} "
                       f"(`core2 status` and the logs in {Path(run_dir) / 'logs'})")


def _relay(log_path: Path, offset: int, progress: Callable[[str], None]) -> int:
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1  # only whole lines
    for line in data[:end].decode(errors="replace").splitlines():
        if PROGRESS in line:
            progress(line.split(PROGRESS, 1)[1])
    return offset + end


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
