"""The local supervisor: restarts what exits (with backoff), reports crash loops instead of
restarting in a tight loop, never calls a dead or unready service Ready; detached, it outlives
`core2 up` and `core2 down` stops it and everything it started."""

import json
import os
import signal
import sys
import time

import pytest
import yaml

from runtime.local.platform import pid_alive, read_state
from runtime.local.supervision import (
    CRASH_LOOP,
    NOT_READY,
    READY,
    RESTARTING,
    STARTING,
    RestartPolicy,
    Supervision,
)
from runtime.procs import Service
from tests.conftest import free_ports
from tests.test_cli import core2


def _sleeper(tmp_path, name="sleeper") -> Service:
    return Service(name, [sys.executable, "-c", "import time; time.sleep(120)"],
                   tmp_path / "logs").start()


def _tick_until(sup: Supervision, check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.tick()
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}: {sup.views()}")


@pytest.fixture
def supervision():
    sup = Supervision(RestartPolicy(backoffSeconds=0.1, maxBackoffSeconds=2.0,
                                    crashLoopExits=3, probeIntervalSeconds=0.05))
    yield sup
    sup.stop_all()


def test_a_killed_service_is_restarted_and_its_exit_recorded(supervision, tmp_path):
    svc = _sleeper(tmp_path)
    supervision.watch("sleeper", svc, lambda: True, ready=True)
    first = svc.pid
    svc.kill()
    supervision.tick()
    w = supervision.watched["sleeper"]
    assert w.state == RESTARTING and w.last_exit["reason"] == "killed by SIGKILL"
    _tick_until(supervision, lambda: w.state == READY, 10, "the restart")
    assert w.restarts == 1 and svc.pid != first and pid_alive(svc.pid)


def test_a_crash_looping_service_is_reported_and_not_restarted_in_a_tight_loop(
        supervision, tmp_path):
    svc = Service("crasher", [sys.executable, "-c",
                              "import sys; print('boom: bad setting', flush=True); sys.exit(3)"],
                  tmp_path / "logs").start()
    supervision.watch("crasher", svc, lambda: True)
    w = supervision.watched["crasher"]
    _tick_until(supervision, lambda: w.state == CRASH_LOOP, 15, "CrashLoopBackOff")
    assert w.last_exit["reason"] == "exited with status 3"
    assert "boom: bad setting" in w.last_exit["log"]
    # Backoff doubled (0.1, 0.2) before the loop was called; from now on the longest wait.
    restarts = w.restarts
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        supervision.tick()
        time.sleep(0.02)
    assert w.restarts <= restarts + 1, "restarted in a tight loop"
    assert w.state == CRASH_LOOP  # still reported, never Ready


def test_ready_only_while_alive_and_the_probe_passes(supervision, tmp_path):
    healthy = {"ok": False}
    svc = _sleeper(tmp_path)
    supervision.watch("svc", svc, lambda: healthy["ok"])
    w = supervision.watched["svc"]
    for _ in range(5):
        supervision.tick()
        time.sleep(0.06)
    assert w.state == STARTING
    healthy["ok"] = True
    _tick_until(supervision, lambda: w.state == READY, 5, "Ready")
    healthy["ok"] = False
    _tick_until(supervision, lambda: w.state == NOT_READY, 5, "NotReady")
    svc.kill()
    supervision.tick()
    assert w.state == RESTARTING and supervision.views()["svc"]["pid"] is None


def _status(run_dir) -> tuple[int, dict]:
    out = core2(run_dir, "status", "--json", timeout=30)
    return out.returncode, json.loads(out.stdout)


def _wait_status(run_dir, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, report = _status(run_dir)
        if check(report):
            return report
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {report}")


def test_detached_platform_is_supervised_and_down_stops_everything(tmp_path):
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({"ports": free_ports().model_dump(),
                                      "supervision": {"backoffSeconds": 0.2}}))
    run_dir = tmp_path / "run"
    up = core2(run_dir, "up", "--detach", "--no-pipelines", "-c", str(config))
    seen: set[int] = set()
    try:
        assert up.returncode == 0, up.stderr
        state = read_state(run_dir)
        supervisor = state["supervisor"]
        assert pid_alive(supervisor)  # the supervisor outlived `core2 up`
        seen |= set(state["pids"].values()) | {supervisor}
        code, report = _status(run_dir)
        assert code == 0 and report["supervisor"]["running"]
        assert {s["state"] for s in report["services"].values()} == {READY}

        # kill -9 the scheduler and a model server: both come back by themselves.
        victims = ["scheduler", "mlserver-0-mlserver"]
        old = {n: state["pids"][n] for n in victims}
        for name in victims:
            os.killpg(old[name], signal.SIGKILL)
        _, report = _status(run_dir)
        for name in victims:  # never Ready on the dead pid
            s = report["services"][name]
            assert s["state"] != READY or s["pid"] != old[name], s
        report = _wait_status(
            run_dir, lambda r: all(r["services"][n]["state"] == READY and
                                   r["services"][n]["restarts"] == 1 for n in victims),
            60, "the killed services to be Ready again")
        for name in victims:
            s = report["services"][name]
            assert s["pid"] != old[name] and pid_alive(s["pid"])
            assert s["lastExit"]["reason"] == "killed by SIGKILL"
            seen.add(s["pid"])
        text = core2(run_dir, "status", timeout=30)
        assert text.returncode == 0, text.stderr
        assert "killed by SIGKILL" in text.stdout and "RESTARTS" in text.stdout
    finally:
        down = core2(run_dir, "down", timeout=60)
    assert down.returncode == 0, down.stderr
    assert not [p for p in seen if pid_alive(p)]
    assert read_state(run_dir) is None


def test_without_its_supervisor_status_says_so_and_down_still_stops_everything(tmp_path):
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({"ports": free_ports().model_dump()}))
    run_dir = tmp_path / "run"
    up = core2(run_dir, "up", "--detach", "--no-pipelines", "-c", str(config))
    state = read_state(run_dir) or {}
    try:
        assert up.returncode == 0, up.stderr
        os.kill(state["supervisor"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(state["supervisor"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        code, report = _status(run_dir)
        assert code == 1 and not report["supervisor"]["running"]
        assert {s["state"] for s in report["services"].values()} == {"Unsupervised"}
        err = core2(run_dir, "status", timeout=30).stderr
        assert "supervisor is not running" in err
    finally:
        down = core2(run_dir, "down", timeout=60)
    assert down.returncode == 0, down.stderr
    assert not [p for p in state.get("pids", {}).values() if pid_alive(p)]
