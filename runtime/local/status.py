"""What `core2 status` shows: each service's state, pid, restarts and last exit, as the
supervisor recorded them, checked against the processes themselves so it never says Ready
for a process that is gone or a supervisor that stopped looking."""

import time

from runtime.local.platform import pid_alive

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


def _ago(at: float | None) -> str:
    if not at:
        return ""
    seconds = max(0, time.time() - at)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def render(report: dict) -> str:
    sup = report["supervisor"]
    lines = [f"supervisor: {'running' if sup['running'] else 'NOT RUNNING'} "
             f"(pid {sup['pid']})", "",
             f"{'SERVICE':28} {'STATE':18} {'PID':>8} {'RESTARTS':>8}  LAST EXIT"]
    for name, s in report["services"].items():
        last = s["lastExit"]
        exit_text = f"{last['reason']} ({_ago(last.get('at'))})" if last else "-"
        lines.append(f"{name:28} {s['state']:18} {s['pid'] or '-':>8} {s['restarts']:>8}  "
                     f"{exit_text}")
    lines.append("")
    lines += [f"  {what:32} {where}" for what, where in report["endpoints"].items()]
    return "\n".join(lines)
