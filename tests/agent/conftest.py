"""Fixtures for the agent tests: real MLServer and agent processes, the sample iris artifact,
and a minimal in-test scheduler speaking core2.agent.Agent."""

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import httpx
import pytest

from runtime.pb import agent_pb2, agent_pb2_grpc
from runtime.procs import Service, free_port, http_ok, python_module, wait_until

ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "samples" / "models" / "iris"
PROBE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                     "data": [6.0, 2.2, 5.0, 1.5]}]}
PROBE_CLASS = 2  # what samples/models/iris answers for PROBE


@pytest.fixture(scope="session")
def iris_artifact() -> Path:
    if not (IRIS / "model.joblib").is_file():
        subprocess.run([sys.executable, str(ROOT / "samples" / "train_iris.py")], check=True)
    return IRIS


class ModelServer:
    """`python -m runtime.agent.modelserver` on free ports."""

    def __init__(self, workdir: Path, name: str = "mlserver"):
        self.repository = workdir / "repository"
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.service = Service(name, python_module(
            "runtime.agent.modelserver", "--repository", str(self.repository),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port)), workdir / "logs", cwd=str(ROOT))

    def start(self) -> "ModelServer":
        self.service.start()
        try:
            wait_until(lambda: http_ok(f"{self.url}/v2/health/ready"), 60, "MLServer ready",
                       self.service)
        except BaseException:  # a server that never got ready must not outlive the test
            self.service.stop()
            raise
        return self

    def held(self) -> set[str]:
        index = httpx.post(f"{self.url}/v2/repository/index", json={}).json()
        return {m["name"] for m in index if m["state"] == "READY"}

    def load_requests(self, internal: str) -> int:
        """How many times the server was asked to load `internal` (from its access log)."""
        return self.service.log_path.read_text().count(
            f"/v2/repository/models/{internal}/load")


@pytest.fixture
def model_server(tmp_path, iris_artifact):
    server = ModelServer(tmp_path).start()
    yield server
    server.service.stop()


class FakeScheduler:
    """The scheduler side of core2.agent.Agent, run on its own event loop thread: records
    subscriptions and events, sends operations, acknowledges EVICTING."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.subscriptions: list[agent_pb2.AgentSubscribe] = []
        self.events: list[agent_pb2.ModelEvent] = []
        self._queue: asyncio.Queue | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    # servicer methods (run on the scheduler's loop)
    async def Subscribe(self, request, context):
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue
        self.subscriptions.append(request)
        while (op := await queue.get()) is not None:
            yield op

    async def Event(self, request, context):
        self.events.append(request)
        return agent_pb2.EventAck(routes_applied=True)

    def start(self) -> "FakeScheduler":
        self._thread.start()

        async def serve():
            self._server = grpc.aio.server()
            handlers = agent_pb2_grpc.AgentServicer()
            handlers.Subscribe, handlers.Event = self.Subscribe, self.Event
            agent_pb2_grpc.add_AgentServicer_to_server(handlers, self._server)
            self._server.add_insecure_port(f"127.0.0.1:{self.port}")
            await self._server.start()

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _put(self, item) -> None:
        queue = self._queue
        assert queue is not None, "no agent subscribed"
        self._loop.call_soon_threadsafe(queue.put_nowait, item)

    def load(self, name: str, version: int, spec: dict, memory: int = 0) -> str:
        internal = f"{name}_{version}"
        self._put(agent_pb2.ModelOperation(
            op=agent_pb2.ModelOperation.LOAD, spec_json=json.dumps(spec), memory_bytes=memory,
            model=agent_pb2.ModelRef(name=name, version=version, internal_name=internal)))
        return internal

    def unload(self, name: str, version: int) -> None:
        self._put(agent_pb2.ModelOperation(
            op=agent_pb2.ModelOperation.UNLOAD,
            model=agent_pb2.ModelRef(name=name, version=version,
                                     internal_name=f"{name}_{version}")))

    def drop_stream(self) -> None:
        """End the current subscription, as a scheduler restart does."""
        self._put(None)

    def wait_subscriptions(self, count: int, timeout: float = 30) -> agent_pb2.AgentSubscribe:
        wait_until(lambda: len(self.subscriptions) >= count, timeout, f"subscription {count}")
        return self.subscriptions[count - 1]

    def events_for(self, internal: str) -> list[str]:
        return [agent_pb2.ModelEvent.Event.Name(e.event) for e in list(self.events)
                if e.model.internal_name == internal]

    def wait_event(self, internal: str, event: str, timeout: float = 60) -> agent_pb2.ModelEvent:
        def seen():
            return any(e.model.internal_name == internal
                       and agent_pb2.ModelEvent.Event.Name(e.event) == event
                       for e in list(self.events))
        wait_until(seen, timeout, f"{event} for {internal}")
        return [e for e in self.events if e.model.internal_name == internal
                and agent_pb2.ModelEvent.Event.Name(e.event) == event][-1]


@pytest.fixture
def scheduler():
    sched = FakeScheduler().start()
    yield sched
    sched.stop()


class AgentProcess:
    def __init__(self, workdir: Path, server: ModelServer, scheduler_port: int,
                 memory: str = "1G"):
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.argv = python_module(
            "runtime.agent", "--scheduler", f"127.0.0.1:{scheduler_port}",
            "--server-name", "mlserver", "--replica-idx", "0",
            "--capabilities", "sklearn,mlserver", "--memory", memory, "--over-commit", "10",
            "--host", "127.0.0.1", "--server-http-port", str(server.http_port),
            "--server-grpc-port", str(server.grpc_port), "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
            "--repository", str(server.repository), "--cache-dir", str(workdir / "cache"))
        self.logs = workdir / "logs"
        self.runs = 0
        self.service: Service | None = None

    def start(self) -> "AgentProcess":
        self.runs += 1
        self.service = Service(f"agent-{self.runs}", self.argv, self.logs, cwd=str(ROOT)).start()
        try:
            wait_until(lambda: http_ok(f"http://127.0.0.1:{self.metrics_port}/ready"), 60,
                       "agent ready", self.service)
        except BaseException:
            self.service.stop()
            raise
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in agent metrics:\n{text}")


@pytest.fixture
def agent(tmp_path, model_server, scheduler):
    proc = AgentProcess(tmp_path, model_server, scheduler.port).start()
    yield proc
    proc.stop()


def infer(url: str, model: str, internal: str | None = None, timeout: float = 30):
    headers = {"seldon-internal-model": internal} if internal else {}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=PROBE, headers=headers,
                      timeout=timeout)


def iris_spec(uri: str, memory: str | None = None) -> dict:
    spec = {"storageUri": uri, "requirements": ["sklearn"]}
    if memory:
        spec["memory"] = memory
    return spec
