"""The agent's settings: the flags its launchers pass (runtime/local/platform.py,
components/server.py) parse as before, CORE2_* variables fill what no flag gives, and a bad
value stops it with exit status 2 naming the flag."""

from pathlib import Path

import pytest

from runtime.agent.config import parse_args
from runtime.agent.drain import parse_args as drain_args

REQUIRED = ["--scheduler", "127.0.0.1:9005", "--server-name", "mlserver",
            "--server-http-port", "1", "--server-grpc-port", "2", "--http-port", "3",
            "--grpc-port", "4", "--metrics-port", "5", "--repository", "repo",
            "--cache-dir", "cache"]


def test_flags_parse_as_the_launchers_pass_them(monkeypatch):
    monkeypatch.delenv("CORE2_AGENT_EVICTION", raising=False)
    c = parse_args([*REQUIRED, "--memory", "1G", "--capabilities", "sklearn, mlserver,",
                    "--replica-idx", "2", "--fetch-rules", '{"maxBytes": "1Gi"}',
                    "--server-kind", "triton", "--load-report-seconds", "0.5"])
    assert (c.memory, c.capabilities, c.replica_idx) == (10**9, ["sklearn", "mlserver"], 2)
    assert c.fetch_rules.max_bytes == 2**30 and c.proxied and c.load_report_seconds == 0.5
    assert c.repository == Path("repo").resolve() and c.eviction == "reload-cost"
    assert parse_args([*REQUIRED, "--memory", "1048576", "--capabilities", ""]).capabilities == []


def test_environment_fills_what_no_flag_gives(monkeypatch):
    monkeypatch.setenv("CORE2_AGENT_EVICTION", "lru")
    monkeypatch.setenv("CORE2_OVER_COMMIT", "25")
    c = parse_args([*REQUIRED, "--memory", "1G", "--over-commit", "30"])
    assert (c.eviction, c.over_commit) == ("lru", 30)  # the flag wins over the variable
    assert parse_args([*REQUIRED, "--memory", "1G"]).over_commit == 25


@pytest.mark.parametrize("argv, flag", [
    ([*REQUIRED, "--memory", "1X"], "--memory"),
    ([*REQUIRED, "--memory", "1G", "--load-report-seconds", "-1"], "--load-report-seconds"),
    ([*REQUIRED, "--memory", "1G", "--eviction", "random"], "--eviction"),
    ([*REQUIRED, "--memory", "1G", "--fetch-rules", '{"maxBytes": 0}'], "maxBytes"),
    (REQUIRED, "--memory"),  # required
])
def test_bad_values_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_drain_refuses_a_timeout_that_is_not_positive(capsys):
    with pytest.raises(SystemExit) as exit_:
        drain_args(["--scheduler", "s:1", "--server-name", "m", "--replica-idx", "0",
                    "--timeout", "0"])
    assert exit_.value.code == 2 and "--timeout" in capsys.readouterr().err
