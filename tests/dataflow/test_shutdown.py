"""SIGTERM is an orderly stop (runtime.dataflow.service): a dataflow service exits promptly
with status 0, leaves no task pending, and loses no record it had taken: the records still in
flight are read again by the restarted service and their requests answered."""

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
from aiohttp import web

from runtime.procs import free_port, http_ok, wait_until
from tests.dataflow.conftest import (
    outputs_of,
    running_broker,
    running_dataflow,
    running_scheduler,
    tensor,
)

broker = pytest.fixture(scope="module", name="broker")(running_broker)
scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)
STOP_S = 10   # "promptly": the supervisor's own grace period is longer
NOT_ORDERLY = ("Task was destroyed but it is pending", "Traceback", "was never awaited")


class HeldModels:
    """A real HTTP hop in front of MLServer that holds every model call until `release()`,
    so the engine's model calls are surely in flight when it is told to stop."""

    def __init__(self, upstream: str, only: str | None = None):
        self.upstream, self.port = upstream, free_port()
        self.only = only   # hold only this model's calls
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen = 0
        self._open = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "held-models proxy did not start"

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{path:.*}", self._forward)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    async def _forward(self, request: web.Request) -> web.Response:
        if self.only is None or f"/models/{self.only}/" in request.path:
            self.seen += 1
            while not self._open.is_set():
                await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as session, session.post(
                self.upstream + request.path, data=await request.read(),
                headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), status=r.status,
                                content_type="application/json")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def held(mlserver):
    proxy = HeldModels(mlserver)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def dataflow(logs, scheduler, broker, held):
    held.release()  # until a test holds calls
    yield from running_dataflow(logs, scheduler, broker, held.url)


def sigterm_and_wait(dataflow, name: str) -> str:
    """SIGTERM the service; it must exit within STOP_S with status 0, leaving nothing pending
    or failed in its log. Returns that part of its log."""
    svc = dataflow.services[name]
    start_of_run = svc.log_path.stat().st_size
    os.kill(svc.pid, signal.SIGTERM)
    started = time.monotonic()
    assert svc.popen.wait(STOP_S + 20) == 0
    took = time.monotonic() - started
    assert took < STOP_S, f"{name} took {took:.1f}s to stop"
    with open(svc.log_path, errors="replace") as f:
        f.seek(start_of_run)
        log = f.read()
    assert "SIGTERM: stopping" in log and " stopped" in log
    assert not [bad for bad in NOT_ORDERLY if bad in log], log[-3000:]
    return log


def test_engine_stopped_with_model_calls_in_flight_loses_none(dataflow, held):
    held.hold()
    seen = held.seen
    try:
        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(dataflow.infer, "chain", [tensor("x", [float(i)])], 90,
                                   **{"seldon-timeout-ms": "80000"}) for i in range(4)]
            wait_until(lambda: held.seen >= seen + 4, 60, "4 model calls held in flight")
            sigterm_and_wait(dataflow, "engine")
            held.release()
            dataflow.start("engine")
            answers = [f.result() for f in pending]
    finally:
        held.release()
        dataflow.start("engine")
    assert [outputs_of(a) for a in answers] == [{"OUTPUT": [(i + 10.0) * 10]} for i in range(4)]


@pytest.mark.parametrize("name", ["engine", "gateway"])
def test_a_service_stops_in_order_and_serves_again_after_a_restart(dataflow, name):
    assert outputs_of(dataflow.infer("chain", [tensor("x", [1.0])])) == {"OUTPUT": [110.0]}
    try:
        sigterm_and_wait(dataflow, name)
    finally:
        dataflow.start(name)
    wait_until(lambda: http_ok(f"{dataflow.url}/v2/pipelines/chain/ready"), 60,
               "the pipeline gateway ready for chain")
    # the engine's requests wait for it (static assignment: it resumes where it stopped)
    r = dataflow.infer("chain", [tensor("x", [2.0])], 60, **{"seldon-timeout-ms": "50000"})
    assert outputs_of(r) == {"OUTPUT": [120.0]}
