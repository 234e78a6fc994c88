"""The scheduler's xDS stream to Envoy: a push that fails (a bug encoding a resource) is
logged and ends the stream, so Envoy connects again, instead of leaving Envoy silently
without routes (it then answers 404 for every model)."""

import asyncio
import logging

from runtime.scheduler.xds import XdsServer


class BrokenPush(XdsServer):
    async def _write(self, stream):
        raise TypeError("bad resource: not a RouteConfiguration")


def test_a_failing_push_is_logged_and_ends_the_stream(caplog):
    async def envoy_says_nothing():
        await asyncio.Event().wait()
        yield  # (an async generator, like gRPC's request iterator)

    async def run() -> list:
        stream = BrokenPush().DeltaAggregatedResources(envoy_says_nothing(), None)
        return [sent async for sent in stream]

    with caplog.at_level(logging.ERROR, logger="runtime.scheduler.xds"):
        sent = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert sent == []
    assert "sending resources failed" in caplog.text
    assert "bad resource: not a RouteConfiguration" in caplog.text
