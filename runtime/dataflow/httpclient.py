"""The engine's HTTP/1.1 client for model calls: pooled keep-alive connections, one request
at a time on each, answers parsed by httptools (llhttp, the parser Node.js uses). Every step
of every pipeline request is one call, so its cost is on the hot path: aiohttp's client
spends 96-195 us of CPU per call, this one 22-51 (bench/httpclient.py). It does only what a
model call needs: POST with a body, an answer with Content-Length or chunked, plain or
gzip/deflate-encoded (Triton compresses its answers)."""

import asyncio
import ssl
import zlib
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """The call failed before a whole answer came (its connection broke, a malformed answer)."""


class ConnectFailed(HttpError):
    """No connection to the server could be made."""


class StaleConnection(HttpError):
    """A kept-alive connection the server had closed: nothing of the request was answered, so
    it is safe to send again at once on a new connection."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.status = 0
        self.encoding = b""
        self.reusable = True
        self.answered_any = False   # a stale connection is one that never answered this call

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.answered_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(HttpError(f"malformed HTTP answer: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answered_any:
            self._fail(HttpError(f"the connection closed mid-answer ({exc or 'by the server'})"))
        else:
            self._fail(StaleConnection(f"the server closed the connection ({exc or 'idle'})"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-encoding":
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.reusable = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answer is None or self.answer.done():
            return
        body = b"".join(self.body)
        if self.encoding not in (b"", b"identity"):
            try:
                body = _decoded(body, self.encoding)
            except (zlib.error, ValueError) as e:
                self._fail(HttpError(f"undecodable answer (content-encoding "
                                     f"{self.encoding.decode(errors='replace')}): {e}"))
                return
        self.answer.set_result((self.status, body))

    # -- one call --------------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.body, self.status, self.encoding, self.answered_any = [], 0, b"", False
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer

    def _fail(self, error: HttpError) -> None:
        self.reusable = False
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def idle_and_open(self) -> bool:
        return (self.reusable and self.transport is not None
                and not self.transport.is_closing())


def _decoded(body: bytes, encoding: bytes) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)
    if encoding == b"deflate":   # zlib-wrapped, or raw as some servers send it
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, wbits=-zlib.MAX_WBITS)
    raise ValueError("not gzip or deflate")


class HttpClient:
    """POSTs to one server (`base`: http(s)://host[:port][/prefix]) over at most `limit`
    connections."""

    def __init__(self, base: str, limit: int = 128, ssl_context: ssl.SSLContext | None = None):
        url = urlsplit(base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" \
            else None
        self._host_header = url.netloc.rsplit("@", 1)[-1]
        self._prefix = url.path.rstrip("/")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body) of the answer. Raises ConnectFailed, StaleConnection or HttpError;
        a caller's timeout (cancellation) closes the connection."""
        request = self._request(path, body, headers)
        async with self._slots:
            conn = await self._connection()
            try:
                status, answer = await conn.send(request)
            except BaseException:
                conn.reusable = False
                raise
            finally:
                if conn.idle_and_open():
                    self._idle.append(conn)
                elif conn.transport is not None:
                    conn.transport.close()
            return status, answer

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}",
                 f"Content-Length: {len(body)}", "Accept-Encoding: identity"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"HTTP header {name!r}: a line break in its name or value")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _connection(self) -> _Connection:
        while self._idle:   # the most recently used first: the least likely to be stale
            conn = self._idle.pop()
            if conn.idle_and_open():
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None)
        except OSError as e:   # refused, unreachable, a TLS handshake that failed
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {e}") from None
        return conn
