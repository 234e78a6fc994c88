"""A loopback HTTP/1.1 server for client tests: each request (head + body) goes to a handler
that writes whatever answer the test needs, well-formed or not."""

import asyncio
from collections.abc import Awaitable, Callable

# (the request, the connection's writer) -> False to close the connection
Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[bytes]]:
    """Start the server; returns it, its base URL and the requests it received."""
    seen: list[bytes] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                seen.append(request)
                if not await handler(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def answer(body: bytes, extra: bytes = b"") -> bytes:
    """A 200 with `body` and Content-Length; `extra`: more header lines, each ending CRLF."""
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)
