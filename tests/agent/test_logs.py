"""The agent and its MLServer log in core2's one format, and the server's log shows what a user
asked for (inference, loads) without the agent's polling (issue 13, item 8)."""

import logging
import re

import httpx

from runtime.agent.serverlogs import PollingToDebug
from runtime.procs import wait_until

from .conftest import infer, iris_spec

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (DEBUG|INFO|WARNING|ERROR) ")
POLLING = ("GET /v2/health/ready", "GET /core2/usage", "POST /v2/repository/index",
           "GET /metrics")


def lines(service) -> list[str]:
    return service.log_path.read_text().splitlines()


def test_server_log_has_inference_and_loads_but_not_the_agents_polling(agent, scheduler,
                                                                        model_server,
                                                                        iris_artifact):
    scheduler.wait_subscriptions(1)
    internal = scheduler.load("iris", 1, iris_spec(str(iris_artifact)))
    scheduler.wait_event(internal, "LOADED")
    # what the agent repeats every 2 s while idle, asked once more here for certain
    httpx.get(f"{model_server.url}/v2/health/ready")
    httpx.get(f"{model_server.url}/core2/usage")
    httpx.post(f"{model_server.url}/v2/repository/index", json={})
    httpx.get(f"http://127.0.0.1:{model_server.metrics_port}/metrics")
    assert infer(model_server.url, "iris", internal).status_code == 200
    wait_until(lambda: any("/infer" in line for line in lines(model_server.service)), 30,
               "the inference request in the server's log")

    server_log = lines(model_server.service)
    assert '"POST /v2/models/iris/infer HTTP/1.1" 200' in "\n".join(server_log)
    assert f"/v2/repository/models/{internal}/load" in "\n".join(server_log)
    assert any(f"Loaded model '{internal}'" in line for line in server_log)
    assert not [line for line in server_log if any(p in line for p in POLLING)]
    for log, service in ((server_log, "mlserver"), (lines(agent.service), "agent")):
        assert log and all((m := LINE.match(line)) and m[1] == service for line in log), log
    agent_log = "\n".join(lines(agent.service))
    assert "subscribed to scheduler" in agent_log
    assert f"agent INFO loaded model={internal} seconds=" in agent_log  # key=value fields


def test_polling_requests_are_kept_at_debug_level():
    def access(method: str, path: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                                 '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5", method, path, "1.1", 200), None)

    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert not PollingToDebug().filter(access("GET", "/v2/health/ready"))
        assert not PollingToDebug().filter(access("GET", "/metrics?x=1"))
        kept = access("POST", "/v2/models/iris/infer")
        assert PollingToDebug().filter(kept) and kept.levelname == "INFO"
        assert PollingToDebug().filter(access("POST", "/v2/repository/models/iris_1/load"))
        root.setLevel(logging.DEBUG)
        polled = access("POST", "/v2/repository/index")
        assert PollingToDebug().filter(polled) and polled.levelname == "DEBUG"
    finally:
        root.setLevel(level)
