"""`<run-dir>/state.json`, the record of a running local platform (ports, endpoints, pids and
their start times), and whether a recorded pid is still the process core2 started: the
kernel reuses a pid once its process is gone, so `core2 down` signals only a process whose
start time matches the recorded one. Light to import: the CLI reads it on every command."""

import json
import os
from pathlib import Path

STATE_FILE = "state.json"


def read_state(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields from field 3 (state) on: those after the parenthesised
    command name, which may itself hold spaces. OSError without procfs or process."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def pid_alive(pid: int | None) -> bool:
    """Running, not a zombie: a killed service stays a zombie until the supervisor (its
    parent) reaps it, and `core2 status` must not call it Ready meanwhile."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return True  # no procfs: the signal test is all there is


def start_time(pid: int | None) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None
    (no such process, or no procfs)."""
    if not pid or pid <= 0:
        return None
    try:
        return int(_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def start_times(pids: list[int | None]) -> dict[str, int]:
    """{pid: start time} for recording beside the pids (JSON keys are strings)."""
    return {str(p): t for p in pids if (t := start_time(p)) is not None}


def is_ours(pid: int | None, recorded: dict[str, int]) -> bool:
    """Alive and the very process recorded: its start time is the recorded one. Without a
    recorded time (no procfs when it was written) a live pid is taken on trust."""
    if not pid_alive(pid):
        return False
    if str(pid) not in recorded:
        return start_time(pid) is None
    return start_time(pid) == recorded[str(pid)]
