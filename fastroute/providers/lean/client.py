"""``LeanClient``: the upstream client built for the request path (``upstream_client = "lean"``).

Each call takes an idle connection of its origin's pool, or opens one; writes the request in
one ``transport.write`` (the request line and ``host`` pre-encoded once per URL, then the
headers, ``content-length`` and the body); and awaits one future.  A pooled connection the
upstream turns out to have closed before any byte of the answer came back is left, and the
request goes once more on a new connection.  A cancelled caller closes its connection.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastroute.errors import UpstreamUnreachable
from fastroute.providers.lean.connection import Connection, Stale
from fastroute.providers.lean.pool import Pool
from fastroute.providers.transport import Reply, Timeouts, _json_or_error

#: set by the request itself, never by a caller's headers
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TARGETS_KEPT = 512
#: encoded header sets kept (they differ by key with forward_client_key, by client headers for Anthropic)
_BLOCKS_KEPT = 256


class Target:
    """One URL, parsed once: its pool and the start of every request to it."""

    __slots__ = ("pool", "post", "get", "auth")

    def __init__(self, pool: Pool, path: bytes, host: bytes, auth: str | None) -> None:
        self.pool = pool
        self.post = b"POST " + path + b" HTTP/1.1\r\nhost: " + host + b"\r\n"
        self.get = b"GET " + path + b" HTTP/1.1\r\nhost: " + host + b"\r\n"
        #: ``authorization`` from credentials in the URL, unless the caller sends its own
        self.auth = auth


def header_block(headers: dict[str, str], auth: str | None) -> bytes:
    """A request's header lines as sent (``host`` and ``content-length`` aside)."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _RESERVED]
    block = "".join(lines)
    if block.count("\n") != len(lines) or block.count("\r") != len(lines):
        bad = next(k for k, v in headers.items() if "\r" in k + v or "\n" in k + v)
        raise ValueError(f"header {bad!r} holds a line break")
    if auth is not None and "authorization" not in headers and "Authorization" not in headers:
        block += f"authorization: {auth}\r\n"
    return block.encode()


class HeaderBlocks:
    """Header blocks already encoded, per set of headers: a provider sends the same few sets
    again and again (measured: ~2 us a request to build one, ~0.5 us to find it)."""

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        self._blocks: dict[tuple[Any, ...], bytes] = {}

    def get(self, headers: dict[str, str], auth: str | None) -> bytes:
        key = (auth, *headers.items())
        block = self._blocks.get(key)
        if block is None:
            block = header_block(headers, auth)
            if len(self._blocks) >= _BLOCKS_KEPT:
                self._blocks.clear()
            self._blocks[key] = block
        return block


def encode_request(start: bytes, block: bytes, body: bytes | None) -> bytes:
    """The whole request, ready for one write."""
    if body is None:
        return b"".join((start, block, b"\r\n"))
    return b"".join((start, b"content-length: %d\r\n" % len(body), block, b"\r\n", body))


class LeanStream:
    """A streamed answer: the status and headers are in, the body comes through :meth:`chunks`."""

    __slots__ = ("status", "headers", "_conn")

    def __init__(self, conn: Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn: Connection | None = conn

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                if conn.body:
                    yield conn.take()
                elif conn.complete:
                    break
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait()
        finally:
            self._done()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        self._done()

    def _done(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish()  # reused if its answer is all in (an unread rest is dropped), else closed


class LeanClient:
    """Keep-alive HTTP/1.1 on the event loop's transports, one pool per origin.

    ``ssl_context`` is the context for ``https`` upstreams (default: the system's trust store,
    verified); ``max_idle`` bounds each origin's idle connections, ``keepalive`` how long one
    is kept (s); ``stream_buffer`` is how many bytes of a streamed body are read ahead of
    the consumer before reading pauses.
    """

    name = "lean"

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 256,
                 keepalive: float = 60.0, stream_buffer: int = 65536) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._keepalive = keepalive
        self._high_water = stream_buffer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._targets: dict[str, Target] = {}
        self._blocks = HeaderBlocks()

    # ── the seam ──────────────────────────────────────────────────────────

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply:
        target = self._target(url)
        conn = await self._exchange(target.pool, self._encode(target.post, target, headers, body),
                                    timeouts, False)
        reply = Reply(conn.status, conn.headers, b"".join(conn.body))
        conn.finish()
        return reply

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> LeanStream:
        target = self._target(url)
        conn = await self._exchange(target.pool, self._encode(target.post, target, headers, body),
                                    timeouts, True)
        return LeanStream(conn)

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any:
        target = self._target(url)
        conn = await self._exchange(target.pool, self._encode(target.get, target, headers, None),
                                    timeouts, False)
        status, body = conn.status, b"".join(conn.body)
        conn.finish()
        return _json_or_error(status, body)

    async def aclose(self) -> None:
        pools, self._pools, self._targets = self._pools, {}, {}
        for pool in pools.values():
            pool.close()
        if pools:
            await asyncio.sleep(0)  # let the transports see themselves closed

    # ── inside ────────────────────────────────────────────────────────────

    async def _exchange(self, pool: Pool, data: bytes, timeouts: Timeouts, stream: bool) -> Connection:
        """Send ``data`` and wait for its answer (``stream``: its head) on a connection of ``pool``."""
        conn = pool.take()
        if conn is not None:
            try:
                await conn.send(data, timeouts.read, stream)
                return conn
            except Stale:
                pass  # closed by the upstream before any byte came back: once more, on a new connection
            except BaseException:
                conn.abort()
                raise
        conn = await pool.connect(timeouts.connect)
        try:
            await conn.send(data, timeouts.read, stream)
        except BaseException:
            conn.abort()
            raise
        return conn

    def _encode(self, start: bytes, target: Target, headers: dict[str, str], body: bytes | None) -> bytes:
        return encode_request(start, self._blocks.get(headers, target.auth), body)

    def _target(self, url: str) -> Target:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or another loop: nothing of the old one can be used here
            for pool in self._pools.values():
                pool.closed = True
            self._loop, self._pools, self._targets = loop, {}, {}
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[url] = self._parse(url, loop)
        return target

    def _parse(self, url: str, loop: asyncio.AbstractEventLoop) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise UpstreamUnreachable(f"cannot connect: {url!r} is not an http or https URL")
        host = parts.hostname
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise UpstreamUnreachable(f"cannot connect: {url!r} has an invalid port") from exc
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            ctx = (self._ssl or self._default_ssl()) if scheme == "https" else None
            pool = self._pools[key] = Pool(loop, host, port, ctx, self._max_idle, self._keepalive, self._high_water)
        name = f"[{host}]" if ":" in host else host
        host_header = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if not path.isascii():
            path = quote(path, safe="/%:@!$&'()*+,;=-._~?")
        auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = "Basic " + base64.b64encode(pair).decode()
        try:
            host_bytes = host_header.encode("ascii")
        except UnicodeEncodeError:
            host_bytes = host.encode("idna") + host_header[len(host):].encode("ascii")
        return Target(pool, path.encode("ascii"), host_bytes, auth)

    def _default_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()  # the system's trust store, hostnames checked
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl
