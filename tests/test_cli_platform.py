"""`core2 up --free-ports`, `status` and `down` as a user runs them from a project's folders,
and `down` never signalling a pid that is no longer core2's."""

import json
import os
import subprocess
import sys

from runtime.local.control import stop
from runtime.local.state import STATE_FILE, pid_alive, read_state, start_time
from runtime.procs import Service
from tests.conftest import ROOT
from tests.test_cli_output import _table

FIXED_PORTS = {9000, 9901, 9004, 9005, 9002, 9006, 9092, 9010, 9011, 9007, 9012, 9013}


def core2(cwd, *args, timeout=180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE2_")}
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**env, "PYTHONPATH": str(ROOT)})


def test_up_free_ports_lists_every_endpoint_and_down_works_from_a_sub_folder(tmp_path):
    project, sub = tmp_path / "project", tmp_path / "project" / "src" / "models"
    sub.mkdir(parents=True)
    up = core2(project, "up", "--detach", "--free-ports")
    state = read_state(project / ".core2") or {}
    try:
        assert up.returncode == 0, up.stderr
        assert not set(state["ports"].values()) & FIXED_PORTS
        _, endpoints = _table(up.stdout)
        for what in ("inference (REST+gRPC, Envoy)", "scheduler API (gRPC)",
                     "pipeline gateway (REST)", "pipeline gateway (gRPC)",
                     "scheduler /metrics", "pipeline gateway /metrics",
                     "mlserver-0-agent /metrics", "dataflow-engine /metrics"):
            assert what in {row[0] for row in endpoints.values()} or what in up.stdout, what
        assert f"127.0.0.1:{state['ports']['envoy']}" in up.stdout
        assert str(state["ports"]["pipelineGatewayHttp"]) in up.stdout

        status = core2(sub, "status", "-o", "json")  # the platform is found from below
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert {s["state"] for s in report["services"].values()} == {"Ready"}
        assert report["endpoints"] == state["endpoints"]
        again = core2(sub, "up", "--detach")
        assert again.returncode == 1 and "already running from" in again.stderr

        # a Server applied to the local platform: the supervisor starts its replica
        manifest = sub / "server.yaml"
        manifest.write_text("apiVersion: mlops.seldon.io/v1alpha1\nkind: Server\n"
                            "metadata: {name: extra}\nspec: {serverConfig: mlserver}\n")
        applied = core2(sub, "apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr
        assert "starting 1 replica(s) of server extra" in applied.stderr
        servers = core2(sub, "server", "list")
        assert _table(servers.stdout)[1]["extra"][:2] == ["extra", "1/1"], servers.stdout
        state = read_state(project / ".core2") or {}
        assert {"extra-0-mlserver", "extra-0-agent"} <= set(state["pids"])
    finally:
        down = core2(sub, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    pids = [state["supervisor"], *state["pids"].values()]
    assert not [p for p in pids if pid_alive(p)]
    nothing = core2(sub, "down")
    assert nothing.returncode == 0 and "not running" in nothing.stderr


def _record(run_dir, pids: dict[str, int], starts: dict[str, int]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATE_FILE).write_text(json.dumps({
        "pids": pids, "services": {n: {"pid": p} for n, p in pids.items()},
        "startTimes": starts}))


def test_down_leaves_a_recycled_pid_alone(tmp_path):
    """A pid in state.json whose process started at another time is someone else's now."""
    ours = Service("ours", [sys.executable, "-c", "import time; time.sleep(60)"],
                   tmp_path / "logs").start()
    other = Service("other", [sys.executable, "-c", "import time; time.sleep(60)"],
                    tmp_path / "logs").start()
    try:
        started = {str(ours.pid): start_time(ours.pid),
                   str(other.pid): start_time(other.pid) - 1}  # as if the pid was reused
        _record(tmp_path / ".core2", {"svc": ours.pid, "gone-svc": other.pid}, started)
        down = core2(tmp_path, "down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert f"left pid {other.pid} alone" in down.stderr
        assert not pid_alive(ours.pid) and pid_alive(other.pid)
        assert read_state(tmp_path / ".core2") is None
    finally:
        ours.stop()
        other.stop()


def test_down_with_only_stale_pids_says_core2_was_not_running(tmp_path):
    gone = Service("gone", [sys.executable, "-c", "pass"], tmp_path / "logs").start()
    gone.popen.wait(30)
    _record(tmp_path / "run", {"svc": gone.pid}, {str(gone.pid): 1})
    done = stop(tmp_path / "run")
    assert done is not None and done.services == [] and not done.foreign
    assert read_state(tmp_path / "run") is None  # the stale record is cleared
    _record(tmp_path / "run", {"svc": gone.pid}, {str(gone.pid): 1})
    down = core2(tmp_path, "down", "--run-dir", "run")
    assert down.returncode == 0 and "core2 was not running" in down.stderr
