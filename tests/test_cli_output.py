"""The core2 CLI's output and flags against one real local platform: tables with headers,
-o wide|json|yaml, --watch, global flags after the verb, the run dir found from a sub-folder
or $CORE2_HOME, and `core2 logs`."""

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
from ruamel.yaml import YAML

from runtime import cli
from runtime.local.config import LocalConfig
from runtime.local.platform import Platform
from tests.conftest import ROOT, Env, free_ports


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_models):
    project = tmp_path_factory.mktemp("project")
    (project / "deep" / "er").mkdir(parents=True)
    platform = Platform(project / ".core2", LocalConfig(ports=free_ports(),
                                                        pipelines=False)).start()
    try:
        e = Env(platform)
        e.load_model("iris", sample_models / "iris")
        e.project = project
        yield e
    finally:
        platform.stop()


@pytest.fixture
def core2(env, capsys, monkeypatch):
    """`core2 ARGS` in-process from a folder below the project, as a user types it:
    (exit status, stdout, stderr)."""
    for name in ("CORE2_HOME", "CORE2_SCHEDULER", "CORE2_INFERENCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(env.project / "deep" / "er")

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def _table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A printed table: its headers, and its rows by first column."""
    header, *rows = text.splitlines()
    starts = [header.index(h) for h in header.split("  ") if h.strip()]
    cells = [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
             for line in rows]
    return [h.strip() for h in header.split("  ") if h.strip()], {c[0]: c for c in cells}


def test_list_prints_a_table_with_headers_found_from_a_sub_folder(core2):
    code, out, err = core2("model", "list")  # no --run-dir: .core2 is two folders up
    assert code == 0, err
    headers, rows = _table(out)
    assert headers == ["NAME", "VERSION", "STATE", "READY"]
    assert rows["iris"] == ["iris", "1", "ModelAvailable", "1/1"]


def test_wide_adds_server_replicas_reason_and_age(core2):
    code, out, err = core2("model", "list", "-o", "wide")
    assert code == 0, err
    headers, rows = _table(out)
    assert headers == ["NAME", "VERSION", "STATE", "READY", "SERVER", "REPLICAS", "REASON",
                       "AGE"]
    *_, server, replicas, reason, age = rows["iris"]
    assert (server, replicas, reason) == ("mlserver", "Available", "-")
    assert age[-1] in "smhd" and age[:-1].isdigit()
    code, out, _ = core2("server", "list", "-o", "wide")
    headers, rows = _table(out)
    assert headers[:4] == ["NAME", "READY", "MODELS", "STATE"]
    assert rows["mlserver"][1:3] == ["1/1", "1"]


def test_json_and_yaml_are_the_same_seldon_document(core2):
    code, out, err = core2("model", "status", "iris", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    code, out, _ = core2("model", "status", "iris", "-o", "yaml")
    assert code == 0 and YAML(typ="safe").load(io.StringIO(out)) == doc
    # Seldon's shape: camelCase keys, numbers as numbers, zeros kept
    [v] = doc["versions"]
    assert v["version"] == 1 and v["state"]["availableReplicas"] == 1
    assert v["state"]["unavailableReplicas"] == 0
    assert list(v["modelReplicaState"]) == ["0"]
    code, out, _ = core2("server", "status", "mlserver")  # json by default, as Seldon's
    [replica] = json.loads(out)["resources"]
    assert replica["replicaIdx"] == 0 and replica["totalMemoryBytes"] > 0
    assert isinstance(replica["availableMemoryBytes"], int)
    code, out, _ = core2("model", "list", "-o", "json")
    assert [d["modelName"] for d in json.loads(out)] == ["iris"]


def test_global_flags_work_after_the_verb(core2, env):
    code, out, err = core2("model", "list", "--timeout", "5", "--scheduler",
                           env.platform.scheduler_address)
    assert code == 0 and "iris" in out, err
    code, _, err = core2("model", "list", "-o", "wide", "--scheduler", "127.0.0.1:1")
    assert code == 1 and "not reachable at 127.0.0.1:1" in err  # the late flag was used
    code, _, err = core2("model", "list", "-o", "tall")
    assert code == 2 and "'tall' is not one of" in err


def test_core2_home_names_the_run_dir(core2, env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .core2 here or above
    monkeypatch.setenv("CORE2_HOME", str(env.platform.run_dir))
    code, out, err = core2("model", "list")
    assert code == 0 and "iris" in out, err


def test_logs_prints_a_service_log_and_names_the_services_when_unknown(core2, env):
    code, out, err = core2("logs", "scheduler")
    assert code == 0, err
    assert out == (env.platform.logs / "scheduler.log").read_text()
    code, out, _ = core2("logs", "scheduler", "--tail", "1")
    assert out == (env.platform.logs / "scheduler.log").read_text().splitlines(True)[-1]
    code, out, _ = core2("logs", "scheduler", "--tail", "100000")  # more than it has: all
    assert out == (env.platform.logs / "scheduler.log").read_text()
    code, _, err = core2("logs", "schedulr")
    assert code == 2 and "no service 'schedulr'" in err
    assert "scheduler" in err and "mlserver-0-agent" in err and "envoy" in err


class Streaming:
    """`core2 ARGS` as a process whose stdout lines are read with a deadline."""

    def __init__(self, env, *argv: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CORE2_HOME": str(env.platform.run_dir)})
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout],
                         daemon=True).start()

    def line(self, timeout: float = 60) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output in {timeout}s") from None

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit status (130 expected) and stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


def test_logs_follow_prints_what_is_appended(env, tmp_path):
    log = env.platform.logs / "extra.log"
    log.write_text("first\n")
    proc = Streaming(env, "logs", "extra", "-f")
    try:
        assert proc.line() == "first\n"
        with open(log, "a") as f:
            f.write("appended later\n")
        assert proc.line() == "appended later\n"
    finally:
        code, err = proc.interrupt()
    assert code == 130, err


def test_watch_prints_each_change_until_interrupted(env):
    proc = Streaming(env, "model", "list", "--watch", "-o", "json")
    try:
        assert json.loads(proc.line())["modelName"] == "iris"
        env.load_model("broken", env.platform.run_dir.parent / "missing", wait=False)
        states = []
        while "ModelFailed" not in states:  # each change, as it happens
            doc = json.loads(proc.line())
            assert doc["modelName"] == "broken"
            states.append(doc["versions"][-1]["state"]["state"])
    finally:
        code, err = proc.interrupt()
        env.scheduler.delete("Model", "broken")
    assert code == 130, err


def test_watch_table_prints_the_header_once(env):
    proc = Streaming(env, "model", "list", "--watch")
    try:
        assert proc.line().split() == ["NAME", "VERSION", "STATE", "READY"]
        assert proc.line().split() == ["iris", "1", "ModelAvailable", "1/1"]
    finally:
        code, err = proc.interrupt()
    assert code == 130, err
