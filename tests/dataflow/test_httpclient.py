"""The engine's model-call client (runtime.dataflow.httpclient) against raw HTTP servers that
answer as Envoy does, and as a broken upstream might: every answer comes back whole, a
connection is kept only while the server keeps it, and a failure is an error that says what
happened, never a hang or a wrong answer."""

import asyncio
import zlib
from collections.abc import Awaitable, Callable

import pytest

from runtime.dataflow.httpclient import ConnectFailed, HttpClient, HttpError, StaleConnection
from runtime.procs import free_port
from tests.dataflow.rawhttp import Handler, answer, serve

Scenario = Callable[[HttpClient, list[bytes]], Awaitable[None]]


def run(handler: Handler, scenario: Scenario, prefix: str = "", limit: int = 128) -> None:
    """`scenario(client, requests the server received)` against a server answering with
    `handler`; the client and the server are closed afterwards."""
    async def main() -> None:
        server, base, seen = await serve(handler)
        client = HttpClient(base + prefix, limit=limit)
        try:
            await scenario(client, seen)
        finally:
            await client.close()
            server.close()

    asyncio.run(main())


def test_answers_come_back_whole_on_one_kept_alive_connection():
    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        body = request.split(b"\r\n\r\n", 1)[1]
        half = len(body) // 2 or 1   # the answer in two writes: split across reads
        writer.write(answer(body)[:-half])
        await writer.drain()
        writer.write(answer(body)[-half:])
        return True

    async def scenario(client: HttpClient, seen: list[bytes]) -> None:
        for i in range(20):
            body = b'{"n": %d}' % i * 100
            assert await client.post("/v2/models/m/infer", body, {"x": "y"}) == (200, body)
        assert len(client._idle) == 1   # one connection, kept
        head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"POST /prefix/v2/models/m/infer HTTP/1.1"
        assert b"x: y" in head and b"Host: 127.0.0.1:%d" % client.port in head

    run(handler, scenario, prefix="/prefix")


def test_a_chunked_answer_is_joined():
    async def handler(_request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        return True

    async def scenario(client: HttpClient, _seen: list[bytes]) -> None:
        assert await client.post("/", b"", {}) == (503, b"hello world")

    run(handler, scenario)


def test_a_connection_the_server_closes_after_answering_is_not_reused():
    async def handler(_request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"ok", b"connection: close\r\n"))
        await writer.drain()
        return False

    async def scenario(client: HttpClient, seen: list[bytes]) -> None:
        for _ in range(3):   # each on a new connection, none sent into a closed one
            assert await client.post("/", b"", {}) == (200, b"ok")
        assert len(seen) == 3 and not client._idle

    run(handler, scenario)


def test_a_connection_closed_before_any_answer_is_stale_and_mid_answer_is_an_error():
    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/mid" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await writer.drain()
        return False   # closed without (a whole) answer

    async def scenario(client: HttpClient, _seen: list[bytes]) -> None:
        with pytest.raises(StaleConnection):
            await client.post("/", b"", {})
        with pytest.raises(HttpError, match="mid-answer") as failed:
            await client.post("/mid", b"", {})
        assert not isinstance(failed.value, StaleConnection)  # never sent again blindly

    run(handler, scenario)


def test_a_malformed_answer_is_an_error_and_the_connection_is_dropped():
    async def handler(_request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        return True

    async def scenario(client: HttpClient, _seen: list[bytes]) -> None:
        with pytest.raises(HttpError, match="malformed HTTP answer"):
            await client.post("/", b"", {})
        assert not client._idle

    run(handler, scenario)


def test_a_call_that_times_out_leaves_no_connection_behind():
    """The late answer of a timed-out call must never be taken for the next call's."""
    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/slow" in request:
            await asyncio.sleep(0.5)
        writer.write(answer(request.split(b" ")[1]))
        return True

    async def scenario(client: HttpClient, _seen: list[bytes]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.post("/slow", b"", {})
        assert not client._idle
        assert await client.post("/fast", b"", {}) == (200, b"/fast")

    run(handler, scenario)


def test_calls_at_once_share_at_most_limit_connections():
    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        writer.write(answer(request.split(b"\r\n\r\n", 1)[1]))
        return True

    async def scenario(client: HttpClient, _seen: list[bytes]) -> None:
        opened: list[int] = []
        original = client._connection

        async def counting():
            conn = await original()
            opened.append(id(conn))
            return conn
        client._connection = counting  # type: ignore[method-assign]
        bodies = [b"%d" % i for i in range(40)]
        got = await asyncio.gather(*(client.post("/", b, {}) for b in bodies))
        assert got == [(200, b) for b in bodies]
        assert len(set(opened)) <= 4

    run(handler, scenario, limit=4)


def test_no_server_is_a_connect_failure_and_a_line_break_in_a_header_is_refused():
    async def scenario() -> None:
        port = free_port()   # nothing listens there
        client = HttpClient(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}"):
            await client.post("/", b"", {})
        with pytest.raises(ValueError, match="x-request-id"):
            await client.post("/", b"", {"x-request-id": "r1\r\nevil: yes"})

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="not an http"):
        HttpClient("ftp://host")


def test_an_encoded_answer_is_decoded_and_plain_ones_are_asked_for():
    """Triton compresses its answers unless asked not to: the client asks for identity and
    still reads a server that compresses anyway."""
    bodies = {b"/gzip": (b"gzip", zlib.compress(b'{"g":1}', wbits=16 + zlib.MAX_WBITS)),
              b"/deflate": (b"deflate", zlib.compress(b'{"d":1}')),
              b"/raw": (b"deflate", zlib.compress(b'{"r":1}', wbits=-zlib.MAX_WBITS)),
              b"/broken": (b"gzip", b"not gzip")}

    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        encoding, body = bodies[request.split(b" ")[1]]
        writer.write(answer(body, b"content-encoding: " + encoding + b"\r\n"))
        return True

    async def scenario(client: HttpClient, seen: list[bytes]) -> None:
        assert await client.post("/gzip", b"", {}) == (200, b'{"g":1}')
        assert await client.post("/deflate", b"", {}) == (200, b'{"d":1}')
        assert await client.post("/raw", b"", {}) == (200, b'{"r":1}')
        with pytest.raises(HttpError, match="content-encoding gzip"):
            await client.post("/broken", b"", {})
        assert all(b"\r\nAccept-Encoding: identity\r\n" in r for r in seen)

    run(handler, scenario)
