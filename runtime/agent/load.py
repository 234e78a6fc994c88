"""The agent's load report: every few seconds, each model's mean requests in flight and request
rate on this replica, sent to the scheduler's model autoscaler (ReportLoad).

Read from the model server's own counters (metrics.AgentMetrics), so no request passes Python
for it: the growth of a model's summed inference seconds over a window, divided by the window,
is its mean number of requests in flight (Little's law); the growth of its request count is its
rate. MLServer times a request from the moment it handles it, Triton from when it queues it."""

import asyncio
import logging
import time

import grpc

from runtime.agent.metrics import AgentMetrics
from runtime.pb import agent_pb2

log = logging.getLogger("core2.agent.load")


class LoadMeter:
    """Turns the monotonic per-model totals into rates over the time between two looks."""

    def __init__(self):
        self._last: dict[str, tuple[float, float]] = {}  # internal -> (seconds, requests)
        self._at: float | None = None

    def rates(self, totals: dict[str, dict[str, float]], internals: list[str], now: float
              ) -> tuple[float, dict[str, tuple[float, float]]]:
        """(window, internal -> (in flight, requests/s)) for `internals`; a model seen for the
        first time counts as idle."""
        window = now - self._at if self._at is not None else 0.0
        self._at = now
        out = {}
        for internal in internals:
            t = totals.get(internal, {})
            now_total = (t.get("seconds", 0.0), t.get("success", 0.0) + t.get("failure", 0.0))
            before = self._last.get(internal, now_total)
            self._last[internal] = now_total
            if window <= 0:
                out[internal] = (0.0, 0.0)
                continue
            out[internal] = (max(0.0, now_total[0] - before[0]) / window,
                             max(0.0, now_total[1] - before[1]) / window)
        for gone in set(self._last) - set(internals):
            del self._last[gone]
        return window, out


async def report_load(agent, interval: float, metrics_url: str) -> None:
    """Read the model server's counters and report every `interval` seconds until cancelled.
    A look that cannot read the counters sends nothing (silence is not idleness)."""
    meter = LoadMeter()
    metrics: AgentMetrics = agent.metrics
    c = agent.config
    while True:
        await asyncio.sleep(interval)
        await metrics.refresh(agent.server.session, metrics_url)
        if metrics.failing or not agent.subscribed.is_set():
            meter = LoadMeter()  # start again: the gap is not one window
            continue
        models = {m.internal_name: m for m in agent.placements.models.values() if m.in_server}
        window, rates = meter.rates(metrics.server_totals.totals, list(models),
                                    time.monotonic())
        if window <= 0:
            continue
        report = agent_pb2.LoadReport(
            server_name=c.server_name, replica_idx=c.replica_idx, window_seconds=window,
            models=[agent_pb2.ModelLoad(model=models[i].ref(), in_flight=f, requests_per_second=r)
                    for i, (f, r) in rates.items()])
        try:
            await agent.send_load(report)
        except grpc.aio.AioRpcError as e:
            log.debug("load report not delivered (%s)", e.code().name)
