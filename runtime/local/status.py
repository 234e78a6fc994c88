"""What `core2 status` shows: each service's state, pid, restarts and last exit, as the
supervisor recorded them, checked against the processes themselves so it never says Ready
for a process that is gone or a supervisor that stopped looking."""

import time

from runtime.local.state import pid_alive

STALE_AFTER_S = 10.0  # the supervisor rewrites state.json every 2 s while it runs


def describe(state: dict) -> dict:
    supervisor = state.get("supervisor")
    running = pid_alive(supervisor)
    age = time.time() - state.get("updated", 0)
    services = {}
    recorded = state.get("services") or {n: {"pid": p} for n, p in state.get("pids", {}).items()}
    for name, info in recorded.items():
        s = {"state": info.get("state", "Unknown"), "pid": info.get("pid"),
             "restarts": info.get("restarts", 0), "lastExit": info.get("lastExit")}
        if not running:
            s["state"] = "Unsupervised" if pid_alive(s["pid"]) else "Exited"
        elif age > STALE_AFTER_S:
            s["state"] = f"Unknown (supervisor silent for {age:.0f}s)"
        elif s["pid"] and not pid_alive(s["pid"]):
            s["state"] = "Exited"  # died since the supervisor last looked
        services[name] = s
    return {"supervisor": {"pid": supervisor, "running": running, "phase": state.get("phase")},
            "services": services, "endpoints": state.get("endpoints", {})}
