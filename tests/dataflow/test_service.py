"""The dataflow service skeleton without a broker (fast layer; test_shutdown.py runs the real
services): the flags the supervisor and the Pulumi components pass, background tasks, and
how `serve` runs and stops roles."""

import asyncio
import logging
import threading
import time

import pytest

from runtime.dataflow import service
from runtime.dataflow.engine import EngineSettings
from runtime.dataflow.pipelinegateway import PipelineGatewaySettings
from runtime.procs import free_port
from runtime.settings import load

COMMON = ["--scheduler", "127.0.0.1:9004", "--kafka-bootstrap", "127.0.0.1:9092",
          "--kafka-prefix", "seldon", "--kafka-namespace", "ns1", "--kafka-fetch-wait-ms", "500",
          "--kafka-replication", "3", "--kafka-partitions", "4"]


def test_each_service_takes_the_flags_it_is_launched_with():
    engine = load(EngineSettings, "engine", [*COMMON, "--metrics-port", "9006",
                                             "--metrics-host", "127.0.0.1",
                                             "--envoy", "https://envoy:9000",
                                             "--envoy-ca", "/ca.pem"])
    assert (engine.scheduler, engine.metrics_port, engine.metrics_host) == \
        ("127.0.0.1:9004", 9006, "127.0.0.1")
    cfg = engine.kafka_config()
    assert (cfg.namespace, cfg.fetch_wait_ms, cfg.replication, cfg.partitions) == \
        ("ns1", 500, 3, 4)
    # how it calls the step models (its in-process model gateway)
    assert (engine.envoy, engine.envoy_ca_file(), engine.model_timeout,
            engine.retry_seconds) == ("https://envoy:9000", "/ca.pem", 30, 120)
    pgw = load(PipelineGatewaySettings, "pgw", [*COMMON, "--host", "127.0.0.1", "--http-port",
                                               "9010", "--grpc-port", "9011",
                                               "--max-request-bytes", "1024"])
    assert (pgw.host, pgw.http_port, pgw.grpc_port, pgw.max_request_bytes, pgw.timeout) == \
        ("127.0.0.1", 9010, 9011, 1024, 30)


def test_settings_read_their_environment_variables(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("CORE2_METRICS_HOST", "127.0.0.2")
    monkeypatch.setenv("CORE2_ENVOY_TLS_CA", "/env-ca.pem")
    engine = load(EngineSettings, "engine", ["--scheduler", "s:1", "--envoy", "http://e"])
    assert (engine.kafka_bootstrap, engine.metrics_host, engine.envoy_ca_file()) == \
        ("broker:9093", "127.0.0.2", "/env-ca.pem")


@pytest.mark.parametrize("argv, flag", [
    ([], "--scheduler"),                                        # required
    (["--scheduler", "s:1", "--http-port", "eighty"], "--http-port"),
    (["--scheduler", "s:1", "--kafka-assignment", "sometimes"], "--kafka-assignment"),
])
def test_a_bad_flag_exits_2_naming_it(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        load(PipelineGatewaySettings, "pgw", argv)
    assert stop.value.code == 2
    assert f"pgw: {flag}:" in capsys.readouterr().err


def test_tasks_log_a_failure_and_close_cancels_the_rest(caplog):
    cancelled = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fails():
        raise ValueError("boom")

    async def scenario():
        tasks = service.Tasks()
        tasks.spawn(forever(), "forever")
        tasks.spawn(fails(), "fails")
        await asyncio.sleep(0.05)
        assert len(tasks) == 1   # the failed one is gone, and was logged
        await tasks.close()
        assert len(tasks) == 0

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert cancelled == [True]
    assert any("task fails failed" in r.getMessage() and r.exc_info for r in caplog.records)


class Waits(service.Role):
    component = "engine"

    def __init__(self):
        self.stopped = False

    def set_pipeline(self, name, version, spec):
        pass

    def remove_pipeline(self, name):
        pass

    async def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
        self.stopped = True


class Fails(Waits):
    component = "gateway"

    async def run(self, stop: threading.Event) -> None:
        raise RuntimeError("role failed")


def settings() -> service.DataflowSettings:
    return load(service.DataflowSettings, "test", ["--scheduler", f"127.0.0.1:{free_port()}"])


def test_serve_runs_several_roles_until_stopped_each_with_its_scheduler_link():
    roles = [Waits(), Waits()]
    stop = threading.Event()

    async def scenario():
        asyncio.get_running_loop().call_later(0.2, stop.set)
        await service.serve(settings(), roles, stop)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert all(r.stopped for r in roles)
    assert all(r.report.__self__.component == "engine" for r in roles)  # SchedulerLink.report


def test_one_role_failing_stops_the_others_and_the_process():
    waits = Waits()
    with pytest.raises(ExceptionGroup) as failed:
        asyncio.run(asyncio.wait_for(service.serve(settings(), [waits, Fails()]), 30))
    assert waits.stopped
    assert "role failed" in str(failed.value.exceptions[0])


def test_a_consumer_thread_failure_is_raised_and_a_stuck_one_does_not_hold_the_exit():
    stop = threading.Event()

    def fails():
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        asyncio.run(asyncio.wait_for(service.in_thread(fails, "fails", stop), 30))

    release = threading.Event()   # a broker call that does not return
    stop.set()
    started = time.monotonic()
    try:
        asyncio.run(service.in_thread(lambda: release.wait(60), "stuck", stop, grace_s=0.5))
        assert time.monotonic() - started < 10
    finally:
        release.set()
