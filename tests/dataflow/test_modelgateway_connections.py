"""The model gateway's pooled connections to Envoy (in the engine's process): a kept-alive
connection the server closed under the next request costs it nothing but a second send."""

import asyncio

from runtime.dataflow.modelgateway import MODEL_RETRIES, ModelGateway

ANSWER = b'{"outputs":[]}'


async def closing_server() -> tuple[asyncio.Server, list[int]]:
    """HTTP/1.1 on loopback that answers the first request of each connection and, like an
    upstream whose idle timeout just ran out, closes the connection under the second one.
    Returns the server and how many requests each connection received."""
    per_connection: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        me = len(per_connection) - 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            per_connection[me] += 1
            if per_connection[me] > 1:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, per_connection


def test_a_connection_closed_by_the_server_is_replaced_at_once():
    async def scenario() -> None:
        server, per_connection = await closing_server()
        port = server.sockets[0].getsockname()[1]
        gw = ModelGateway(f"http://127.0.0.1:{port}", lambda *_answer: None)
        gw.open()
        resets = MODEL_RETRIES.labels("m", "reset")
        before = resets._value.get()
        try:
            assert await gw._call("m", "r1", b"{}") == (200, ANSWER)
            # the pooled connection is closed under this one: sent again, answered
            assert await gw._call("m", "r2", b"{}") == (200, ANSWER)
            assert per_connection == [2, 1]
            assert resets._value.get() == before + 1
        finally:
            await gw.client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_refused_connection_is_not_sent_again_at_once():
    """No server at all: a 502 for the retry-with-backoff path, not a tight loop."""
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        gw = ModelGateway(f"http://127.0.0.1:{port}", lambda *_answer: None)
        gw.open()
        resets = MODEL_RETRIES.labels("gone", "reset")
        try:
            status, body = await gw._call("gone", "r1", b"{}")
            assert status == 502 and "calling the model failed" in body
            assert resets._value.get() == 0
        finally:
            await gw.client.close()

    asyncio.run(scenario())
