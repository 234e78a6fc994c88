"""The skeleton every dataflow service runs on, written once: settings, logs and tracing, the
scheduler link, /metrics, background tasks that are kept and awaited, and an orderly shutdown
on SIGTERM/SIGINT. A service is a `Role` (what it does with pipelines and records); `serve`
runs roles in one process, each with its own scheduler link, until one ends or a signal
stops them all.

    python -m runtime.dataflow.engine|pipelinegateway --scheduler H:P ...
"""

import asyncio
import gc
import logging
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ClassVar

import uvloop
from confluent_kafka import Producer
from prometheus_client import start_http_server
from pydantic import Field

from runtime import logs, tracing
from runtime.dataflow.control import SchedulerLink
from runtime.dataflow.records import IDLE_WAIT_S
from runtime.kafka import KafkaSettings
from runtime.specs.pipeline import PipelineSpec

log = logging.getLogger("dataflow")
Report = Callable[..., None]   # (name, version, ready, reason="") -> None: SchedulerLink.report
STOP_GRACE_S = 5.0   # how long a consumer thread may take to finish once stopped


class DataflowSettings(KafkaSettings):
    """Flags every dataflow service takes: the scheduler and the --kafka-* ones."""

    scheduler: str = Field(description="HOST:PORT of the scheduler API")


class MetricsSettings(DataflowSettings):
    """A service whose /metrics is served on a port of its own (the pipeline gateway serves
    it on its HTTP port)."""

    metrics_port: int = Field(0, description="port of /metrics (0: none)")
    metrics_host: str = Field("0.0.0.0", description=(
        "address /metrics binds (env CORE2_METRICS_HOST; local mode: 127.0.0.1; in a pod "
        "0.0.0.0, for Prometheus to scrape)"))


def _no_report(name: str, version: int, ready: bool, reason: str = "") -> None:
    pass


class Role(ABC):
    """One dataflow role: it is told the pipelines (by its scheduler link), reports whether
    it runs them (`report`), and works in `run` until `stop` is set. `run` must return soon
    after `stop` is set, having closed its clients, and must not leave a task behind."""

    component: ClassVar[str]   # how the scheduler knows it: engine, gateway
    report: Report = staticmethod(_no_report)   # serve sets the scheduler link's

    @abstractmethod
    def set_pipeline(self, name: str, version: int, spec: PipelineSpec) -> None: ...

    @abstractmethod
    def remove_pipeline(self, name: str) -> None: ...

    @abstractmethod
    async def run(self, stop: threading.Event) -> None: ...


class Tasks:
    """Background tasks, kept until they end: a failure is logged (never lost with a dropped
    reference), and `close` cancels what is left and waits for it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, object], name: str | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("task %s failed", task.get_name(), exc_info=e)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def in_thread(work: Callable[[], None], name: str, stop: threading.Event,
                    grace_s: float = STOP_GRACE_S) -> None:
    """Run a blocking loop (a consumer's, which ends when `stop` is set) on a thread of its
    own and wait for it; its failure is raised here. Once `stop` is set, a thread still in a
    broker call (up to 15 s with the broker away) gets `grace_s`, then is left behind: a
    daemon, so it does not hold up the exit."""
    failed: list[BaseException] = []

    def main() -> None:
        try:
            work()
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    while thread.is_alive() and not stop.is_set():
        await asyncio.sleep(IDLE_WAIT_S)
    await asyncio.to_thread(thread.join, grace_s)
    if failed:
        raise failed[0]
    if thread.is_alive():
        log.warning("%s still busy %gs after the stop; not waiting for it", name, grace_s)


async def poll_producer(producer: Producer, stop: threading.Event) -> None:
    """Serve the producer's callbacks (deliveries, errors) from the event loop until stop."""
    while not stop.is_set():
        await asyncio.sleep(IDLE_WAIT_S)
        producer.poll(0)


async def _until_stopped(role: Role, stop: threading.Event) -> None:
    try:
        await role.run(stop)
    except Exception:
        log.exception("%s failed", role.component)
        raise
    finally:
        stop.set()   # one role ending (or failing) ends the process: the supervisor restarts it


async def serve(settings: DataflowSettings, roles: Sequence[Role],
                stop: threading.Event | None = None) -> None:
    """Run `roles` until SIGTERM/SIGINT (or `stop`), then wait for each to close down."""
    stop = stop or threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(stop, sig))
    metrics = None
    if isinstance(settings, MetricsSettings) and settings.metrics_port:
        metrics, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    links = []
    for role in roles:
        link = SchedulerLink(settings.scheduler, role, role.component)
        role.report = link.report
        links.append(link.start())
    try:
        # not a TaskGroup: a role that ends sets `stop`, and the others then close down in
        # their own order rather than being cancelled mid-way
        ended = await asyncio.gather(*(_until_stopped(r, stop) for r in roles),
                                     return_exceptions=True)
        if failed := [e for e in ended if isinstance(e, BaseException)]:
            raise BaseExceptionGroup("dataflow roles failed", failed)
    finally:
        for link in links:
            link.stop()
        if metrics is not None:
            metrics.shutdown()
        log.info("stopped")


def _stopper(stop: threading.Event, sig: signal.Signals) -> Callable[[], None]:
    def on_signal() -> None:
        log.info("%s: stopping", sig.name)
        stop.set()
    return on_signal


def run(service: str, settings: DataflowSettings, *roles: Role) -> None:
    """A service's main: logs as `service`, traces as core2-<service without dashes> (the
    names its traces always had), and serves `roles`."""
    logs.setup(service, settings.log_level)
    tracing.init("core2-" + service.replace("-", ""))  # only when an OTLP endpoint is set
    # What the imports made lives as long as the process: kept out of the cyclic collector,
    # whose full passes otherwise walk all of it every few seconds under load (about 70,000
    # objects: 46-64 ms of CPU a pass here, pausing the records and model calls in flight)
    gc.collect()
    gc.freeze()
    try:
        # uvloop: the services' event loops spend most of their time in socket calls, which
        # it does in C (bench/pipelines.py: the engine's CPU per request about 10 % less)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings, roles))
    except BaseExceptionGroup:  # logged as it happened
        sys.exit(1)
