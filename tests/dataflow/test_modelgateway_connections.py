"""The model gateway's pooled connections to Envoy (in the engine's process): a kept-alive
connection the server closed under the next request costs it nothing but a second send."""

import asyncio

from runtime.dataflow.modelgateway import MODEL_RETRIES, ModelGateway
from runtime.procs import free_port
from tests.dataflow.rawhttp import answer, serve

ANSWER = b'{"outputs":[]}'


async def closing_server() -> tuple[asyncio.Server, str, dict[asyncio.StreamWriter, int]]:
    """HTTP/1.1 on loopback that answers the first request of each connection and, like an
    upstream whose idle timeout just ran out, closes the connection under the second one.
    Returns the server, its URL and how many requests each connection received (in the
    order the connections came)."""
    per_connection: dict[asyncio.StreamWriter, int] = {}

    async def handler(_request: bytes, writer: asyncio.StreamWriter) -> bool:
        per_connection[writer] = per_connection.get(writer, 0) + 1
        if per_connection[writer] > 1:
            return False
        writer.write(answer(ANSWER, b"content-type: application/json\r\n"))
        await writer.drain()
        return True

    server, url, _ = await serve(handler)
    return server, url, per_connection


def test_a_connection_closed_by_the_server_is_replaced_at_once():
    async def scenario() -> None:
        server, url, per_connection = await closing_server()
        gw = ModelGateway(url, lambda *_answer: None)
        gw.open()
        resets = MODEL_RETRIES.labels("m", "reset")
        before = resets._value.get()
        try:
            assert await gw._call("m", "r1", b"{}") == (200, ANSWER)
            # the pooled connection is closed under this one: sent again, answered
            assert await gw._call("m", "r2", b"{}") == (200, ANSWER)
            assert list(per_connection.values()) == [2, 1]
            assert resets._value.get() == before + 1
        finally:
            await gw.client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_refused_connection_is_not_sent_again_at_once():
    """No server at all: a 502 for the retry-with-backoff path, not a tight loop."""
    async def scenario() -> None:
        gw = ModelGateway(f"http://127.0.0.1:{free_port()}", lambda *_answer: None)
        gw.open()
        resets = MODEL_RETRIES.labels("gone", "reset")
        try:
            status, body = await gw._call("gone", "r1", b"{}")
            assert status == 502 and "calling the model failed" in body
            assert resets._value.get() == 0
        finally:
            await gw.client.close()

    asyncio.run(scenario())
