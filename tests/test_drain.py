"""Draining a server replica that is going away (the server pod's preStop hook): its models
move to other replicas before it stops serving them, with no failed request; a model that
cannot move is named with the reason and keeps being served."""

import http.client
import json
import subprocess
import sys
import threading
import time

from runtime.local.config import LocalServer
from runtime.scheduler.placement import PlacementError, place
from runtime.scheduler.state import Replica
from tests.conftest import IRIS_CLASS, iris_request, wait_for

MIB = 2**20


def _replica(idx: int, draining: bool = False) -> Replica:
    return Replica("s", idx, ["sklearn"], 100 * MIB, 0, "127.0.0.1", 1, 2, 3, 4,
                   connected=True, draining=draining)


def test_placement_skips_draining_replicas_and_says_so():
    common = dict(requirements=["sklearn"], memory=MIB, want=1, minimum=1, pinned="s",
                  used={}, holding=set())
    # replica 0 would win (lowest index, same free memory) were it not draining
    assert place(replicas=[_replica(0, True), _replica(1)], **common).replicas == [1]
    try:
        place(replicas=[_replica(0, True)], **common)
    except PlacementError as e:
        assert "'s' has no connected replica that is not draining (1 draining)" in str(e)
    else:
        raise AssertionError("placed on a draining replica")


class Traffic(threading.Thread):
    """Sequential REST inferences for `model` (iris) through Envoy until stopped, `pause`
    seconds apart; every answer that is not a 200 with the model's class `expect` (or no
    answer) counts as a failure."""

    def __init__(self, url: str, model: str = "iris", expect: int = IRIS_CLASS,
                 pause: float = 0.0):
        super().__init__(daemon=True)
        self.port = int(url.rsplit(":", 1)[1])
        self.model, self.expect, self.pause = model, expect, pause
        self.ok, self.failed, self.errors = 0, 0, []
        self._halt = threading.Event()

    def run(self) -> None:
        body = iris_request()
        while not self._halt.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                while not self._halt.is_set():
                    conn.request("POST", f"/v2/models/{self.model}/infer", body,
                                 {"content-type": "application/json"})
                    resp = conn.getresponse()
                    data = json.loads(resp.read())
                    if resp.status == 200 and data["outputs"][0]["data"][0] == self.expect:
                        self.ok += 1
                    else:
                        self._fail(f"{resp.status} {data}")
                    self._halt.wait(self.pause)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self._fail(repr(e))
            finally:
                conn.close()

    def _fail(self, what: str) -> None:
        self.failed += 1
        self.errors.append(what)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)


def _drain(env, idx: int, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.agent", "drain",
         "--scheduler", f"127.0.0.1:{env.platform.ports['schedulerAgent']}",
         "--server-name", "mlserver", "--replica-idx", str(idx), "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30)


def _iris(env):
    [status] = env.scheduler.status("Model", "iris")
    return status, {r.replica: r.state for r in status.versions[0].replicas}


def _replicas(env) -> dict[int, dict]:
    detail = json.loads(env.scheduler.status("Server", "mlserver")[0].detail_json)
    return {r["replica"]: r for r in detail["replicas"]}


def test_drain_moves_iris_to_the_other_replica_without_a_failed_request(make_env,
                                                                         sample_models):
    env = make_env([LocalServer(name="mlserver", replicas=2)])
    env.load_model("iris", sample_models / "iris")
    _, placed = _iris(env)
    [first] = placed
    other = 1 - first

    traffic = Traffic(env.url)
    traffic.start()
    wait_for(lambda: traffic.ok >= 20, 30, "traffic to flow before the drain")
    before, started = traffic.ok, time.monotonic()
    result = _drain(env, first)
    took = time.monotonic() - started
    during = traffic.ok - before
    # Read at once: the new copy must already be Available when the command returns.
    status, states = _iris(env)
    wait_for(lambda: traffic.ok >= before + during + 20, 30, "traffic after the drain")
    traffic.stop()

    print(f"drain took {took:.2f}s; {during} requests served during it, "
          f"{traffic.failed} failed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"moved iris v1 to mlserver/{other}" in result.stdout
    assert "0 not moved" in result.stdout
    assert status.state == "ModelAvailable" and states[other] == "Available", states
    assert states.get(first, "gone") != "Available", "the draining copy is still routed"
    assert traffic.failed == 0, traffic.errors[:5]
    assert during > 0

    # The draining copy is unloaded; the replica stays draining, so nothing new lands there.
    wait_for(lambda: list(_iris(env)[1]) == [other], 30, "the draining copy to unload")
    assert _replicas(env)[first]["draining"] is True
    env.load_model("iris2", sample_models / "iris2")
    [iris2] = env.scheduler.status("Model", "iris2")
    assert [r.replica for r in iris2.versions[0].replicas] == [other]

    # The pod restarts: its agent reconnects and the replica is no longer draining.
    env.platform.restart(f"mlserver-{first}-agent")
    wait_for(lambda: (r := _replicas(env)[first])["connected"] and not r["draining"], 30,
             f"replica {first} to reconnect undrained")
    assert env.predict("iris") == IRIS_CLASS


def test_a_model_with_nowhere_to_go_is_named_and_keeps_answering(make_env, sample_models):
    env = make_env([LocalServer(name="mlserver", replicas=1)])
    env.load_model("iris", sample_models / "iris")

    result = _drain(env, 0, timeout=20)

    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("not moved iris v1"))
    assert "served by mlserver/0" in line
    assert "no other replica fits" in line and "no connected replica that is not draining" \
        in line, line
    status, states = _iris(env)
    assert status.state == "ModelAvailable" and states == {0: "Available"}
    assert env.predict("iris") == IRIS_CLASS
