"""Checks a `storageUri` against a Server's fetch rules before anything is copied, and guards
every HTTP connection the fetch makes (redirects and DNS answers included), so a refused
address is never reached. Refusals name the field and the rule."""

import asyncio
import os
import socket
import threading
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from fsspec.registry import known_implementations
from yarl import URL

from runtime.specs.fetch import FetchRules

FIELD = "spec.storageUri"
# Instance metadata services (AWS, ECS, GCP and Azure use 169.254.169.254; Alibaba; AWS IPv6)
METADATA = {ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200",
                                    "fd00:ec2::254")}


class FetchRefused(Exception):
    """The URI breaks a fetch rule; the message names the field and the rule."""


class FetchAborted(Exception):
    """The fetch was cancelled (its model was unloaded) while bytes were arriving."""


# Listing pages (an http "folder") are read whole by fsspec; they count against the cap too,
# with this much allowance on top of the artifact itself.
LISTING_ALLOWANCE = 64 << 20


def read_roots(path: Path | None) -> list[Path]:
    """Extra local roots, one folder a line (the local platform appends the folders of
    applied manifests); read at every fetch, so no restart is needed."""
    if path is None:
        return []
    try:
        return [Path(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def check_uri(uri: str, rules: FetchRules, roots: list[Path]) -> None:
    """Raise FetchRefused unless `uri` may be fetched. `roots`: the local folders allowed
    now (rules.localRoots plus any the caller adds), ignored when rules.localRoots is None."""
    scheme = scheme_of(uri)
    if scheme not in rules.allowedSchemes:
        allowed = ", ".join(rules.allowedSchemes)
        if scheme not in known_implementations:
            raise FetchRefused(f"{FIELD}: {uri!r}: unsupported scheme {scheme!r} "
                               f"(fetch.allowedSchemes: {allowed})")
        raise FetchRefused(f"{FIELD}: {uri!r}: scheme {scheme!r} is not allowed on this server "
                           f"(fetch.allowedSchemes: {allowed})")
    if scheme == "file":
        check_local(local_path(uri), uri, rules, roots)
    elif scheme in ("http", "https"):
        host = urlsplit(uri).hostname
        if not host:
            raise FetchRefused(f"{FIELD}: {uri!r}: no host name")
        check_host(host, uri, rules)


def local_path(uri: str) -> str:
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise FetchRefused(f"{FIELD}: {uri!r}: a file:// URI names no host")
    return unquote(parts.path)


def check_local(path: str, uri: str, rules: FetchRules, roots: list[Path]) -> None:
    if rules.localRoots is None:
        return
    if not os.path.isabs(path):
        raise FetchRefused(f"{FIELD}: {uri!r}: a local path must be absolute")
    real = Path(os.path.realpath(path))  # symbolic links cannot lead outside a root
    allowed = [Path(os.path.realpath(r)) for r in roots]
    if not any(real == r or r in real.parents for r in allowed):
        shown = ", ".join(str(r) for r in allowed) or "none configured"
        raise FetchRefused(f"{FIELD}: {uri!r}: {real} is outside the folders this server may "
                           f"read (fetch.localRoots: {shown})")


def refused_address(addr: str, rules: FetchRules) -> str | None:
    """Why this address may not be fetched from, or None."""
    ip = ip_address(addr.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in net for net in rules.allowedNetworks):
        return None
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast:
        return "not a unicast address"
    return None


def check_host(host: str, uri: str, rules: FetchRules) -> list[str]:
    """Resolve `host`; every address must pass (a name may resolve to several)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise FetchRefused(f"{FIELD}: {uri!r}: host {host!r} does not resolve ({e})") from None
    addresses = sorted({str(i[4][0]) for i in infos})
    for addr in addresses:
        if why := refused_address(addr, rules):
            raise FetchRefused(f"{FIELD}: {uri!r}: host {host!r} is {addr}, {why}, which "
                               f"this server may not fetch from (fetch.allowedNetworks)")
    return addresses


class _GuardedResolver(AbstractResolver):
    """DNS answers are checked where the connection is made (no rebinding in between)."""

    def __init__(self, rules: FetchRules):
        self.rules, self.inner = rules, DefaultResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        found = await self.inner.resolve(host, port, family)
        for item in found:
            if why := refused_address(item["host"], self.rules):
                raise FetchRefused(f"{FIELD}: host {host!r} is {item['host']}, {why}, which "
                                   "this server may not fetch from (fetch.allowedNetworks)")
        return found

    async def close(self):
        await self.inner.close()


def http_client_factory(rules: FetchRules, cancel: threading.Event | None = None):
    """fsspec's `get_client` for http(s): each request (redirects too) is checked first, and
    every chunk received (listings too, which fsspec reads whole) is counted against the cap
    and stops the fetch once `cancel` is set."""
    received = 0
    limit = rules.max_bytes + LISTING_ALLOWANCE

    async def check(url: URL) -> None:
        if scheme_of(str(url)) not in rules.allowedSchemes:
            raise FetchRefused(f"{FIELD}: {str(url)!r}: scheme {url.scheme!r} is not allowed "
                               f"(fetch.allowedSchemes: {', '.join(rules.allowedSchemes)})")
        host = url.host or ""
        try:
            ip_address(host)
        except ValueError:
            return  # a name: the resolver checks its addresses at connect time
        await asyncio.to_thread(check_host, host, str(url), rules)

    async def on_request_start(_session, _ctx, params) -> None:
        await check(params.url)

    async def on_request_redirect(_session, _ctx, params) -> None:
        # aiohttp follows redirects inside one request: check where it is about to go
        location = params.response.headers.get("Location", "")
        await check(params.url.join(URL(location)))

    def count(n: int) -> None:
        nonlocal received
        received += n
        if cancel is not None and cancel.is_set():
            raise FetchAborted("fetch cancelled: the model was unloaded")
        if received > limit:
            raise FetchRefused(f"{FIELD}: more than this server's fetch.maxBytes "
                               f"({rules.max_bytes} bytes) arrived")

    class BoundedResponse(aiohttp.ClientResponse):
        """`read()` (what fsspec uses for listings and ranges) in counted chunks: aiohttp's
        own reads the whole body before any hook sees it, so an endless body never ends."""

        async def read(self) -> bytes:
            if self._body is None:
                parts = []
                try:
                    while chunk := await self.content.readany():
                        count(len(chunk))
                        parts.append(chunk)
                except BaseException:
                    self.close()
                    raise
                self._body = b"".join(parts)
            return await super().read()  # the body is set: releases the connection as usual

    async def get_client(**kwargs) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_request_start)
        trace.on_request_redirect.append(on_request_redirect)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=_GuardedResolver(rules)),
            trace_configs=[trace], response_class=BoundedResponse, **kwargs)

    return get_client
