"""The one seam all provider HTTP goes through.

Three operations: post bytes and read the whole answer, post bytes and stream
the answer's chunks as they arrive, get JSON.  Three implementations, chosen by
``[server] upstream_client``:

- ``lean`` (default): fastroute's own keep-alive HTTP/1.1 client over the event loop's
  transports, responses parsed by httptools (``fastroute/providers/lean/``): about a fifth
  of aiohttp's CPU per plain request and ~5 KiB per open stream against ~19
  (``benchmarks/test_bench_lean_client.py``).
- ``aiohttp``: aiohttp's own client, 0.1–0.2 ms of CPU per upstream
  request on this machine class whatever the concurrency.
- ``httpx``: httpx.AsyncClient, for those who prefer it: 0.5–1 ms per request
  alone, and several ms at concurrency 32, where httpcore's pool checks every
  idle connection on each request (see ``benchmarks/e2e.py`` and
  ``benchmarks/test_bench_upstream_client.py``).

None keeps cookies: a ``Set-Cookie`` from an upstream would otherwise ride
along on every other user's requests to it.  None follows a redirect: a
``3xx`` is handed back as it is (the provider layer makes it a 502), because
following it would carry the provider's key to wherever the ``Location`` says.
None takes a proxy from the environment (``HTTP_PROXY``, ``ALL_PROXY``, ...):
an upstream call goes where its base URL says and nowhere else.

Transport exceptions are mapped by type, most specific first, to
:mod:`fastroute.errors` (``UpstreamUnreachable``, ``UpstreamTimeout``,
``UpstreamProtocolError``).  Callers add the provider's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Protocol

import orjson

from fastroute.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class StreamReply(Protocol):
    status: int
    headers: dict[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks, each yielded the moment it arrives."""

    async def read(self) -> bytes:
        """The whole (remaining) body."""

    async def aclose(self) -> None:
        """Release the connection; cancels the upstream request if unfinished."""


class UpstreamClient(Protocol):
    name: str

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply: ...

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> StreamReply: ...

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any: ...

    async def aclose(self) -> None: ...


Mapper = Callable[[BaseException], BaseException]


@contextmanager
def _mapped(mapper: Mapper) -> Iterator[None]:
    """Re-raise transport exceptions as fastroute's own (``raise ... from exc``)."""
    try:
        yield
    except BaseException as exc:
        mapped = mapper(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def make_client(name: str) -> UpstreamClient:
    if name == "lean":
        from fastroute.providers.lean import LeanClient  # only the client in use is imported

        return LeanClient()
    if name == "aiohttp":
        return AiohttpClient()
    if name == "httpx":
        return HttpxClient()
    raise ValueError(f"unknown upstream client {name!r}")


def _json_or_error(status: int, body: bytes) -> Any:
    if status >= 400:
        raise UpstreamProtocolError(f"HTTP {status}")
    if status >= 300:
        raise UpstreamProtocolError(f"HTTP {status}, a redirect (redirects are not followed)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("the upstream answered with invalid JSON") from exc


# ── aiohttp ────────────────────────────────────────────────────────────────

class _AiohttpStream:
    """One streamed aiohttp response.  It lives as long as the stream, so it keeps nothing the
    stream does not need: the headers are read from aiohttp's own when asked for."""

    __slots__ = ("_resp", "_map", "status")

    def __init__(self, resp: Any, mapper: Mapper) -> None:
        self._resp = resp
        self._map = mapper
        self.status = resp.status

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self._resp.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        read = self._resp.content.readany
        try:
            while True:
                chunk = await read()
                if not chunk:
                    return
                yield chunk
        except BaseException as exc:  # what _mapped does, without a context manager held per stream
            mapped = self._map(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def read(self) -> bytes:
        with _mapped(self._map):
            return await self._resp.read()

    async def aclose(self) -> None:
        # close(), not release(): an unfinished upstream request is cancelled
        # (the connection is dropped) instead of read to its end.
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()


class AiohttpClient:
    """aiohttp's client with one pooled keep-alive connector per worker."""

    name = "aiohttp"

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session: Any = None
        self._timeouts: dict[Timeouts, Any] = {}

    def _get_session(self) -> Any:
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60,
                                             enable_cleanup_closed=True, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",),
                trust_env=False,  # no proxy from HTTP_PROXY & co.: calls go where the base URL says
                # never keep an upstream's cookies: they would travel with every other user's requests
                cookie_jar=aiohttp.DummyCookieJar(),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    def _timeout(self, t: Timeouts) -> Any:
        tm = self._timeouts.get(t)
        if tm is None:
            tm = self._timeouts[t] = self._aiohttp.ClientTimeout(total=None, sock_connect=t.connect,
                                                                  sock_read=t.read)
        return tm

    def _map(self, exc: BaseException) -> BaseException:
        aiohttp = self._aiohttp
        if isinstance(exc, UpstreamError | UpstreamTimeout | asyncio.CancelledError | GeneratorExit):
            return exc
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeout("connect timeout", phase="connect")
        if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
            return UpstreamTimeout("read timeout")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnreachable(f"cannot connect: {exc.os_error.strerror or exc.os_error}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamProtocolError("the upstream closed the connection")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return UpstreamProtocolError("the upstream's response was cut off")
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            return UpstreamProtocolError(f"{type(exc).__name__}: {exc}")
        return exc

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply:
        with _mapped(self._map):
            # allow_redirects=False on every call: aiohttp follows by default, with every header but
            # Authorization (an x-api-key goes along), and has no session-wide switch
            async with self._get_session().post(url, data=body, headers=headers, allow_redirects=False,
                                                timeout=self._timeout(timeouts)) as resp:
                data = await resp.read()
                return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> StreamReply:
        with _mapped(self._map):
            resp = await self._get_session().post(url, data=body, headers=headers, allow_redirects=False,
                                                  timeout=self._timeout(timeouts))
        return _AiohttpStream(resp, self._map)

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any:
        with _mapped(self._map):
            async with self._get_session().get(url, headers=headers, allow_redirects=False,
                                               timeout=self._timeout(timeouts)) as resp:
                return _json_or_error(resp.status, await resp.read())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# ── httpx ──────────────────────────────────────────────────────────────────

class _HttpxStream:
    __slots__ = ("_resp", "_map", "status")

    def __init__(self, resp: Any, mapper: Mapper) -> None:
        self._resp = resp
        self._map = mapper
        self.status = resp.status_code

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self._resp.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        with _mapped(self._map):
            async for chunk in self._resp.aiter_bytes():
                if chunk:
                    yield chunk

    async def read(self) -> bytes:
        with _mapped(self._map):
            return await self._resp.aread()

    async def aclose(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    """httpx.AsyncClient with its default transport."""

    name = "httpx"

    def __init__(self) -> None:
        import httpx

        self._httpx = httpx
        self._client: Any = None
        self._timeouts: dict[Timeouts, Any] = {}

    def _get_client(self) -> Any:
        if self._client is None:
            httpx = self._httpx
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60),
                # no redirect followed (the key would go along), no proxy from HTTP_PROXY & co.
                follow_redirects=False, trust_env=False,
                # never keep an upstream's cookies: they would travel with every other user's requests
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    def _timeout(self, t: Timeouts) -> Any:
        tm = self._timeouts.get(t)
        if tm is None:
            tm = self._timeouts[t] = self._httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=None)
        return tm

    def _map(self, exc: BaseException) -> BaseException:
        httpx = self._httpx
        if isinstance(exc, UpstreamError | UpstreamTimeout | asyncio.CancelledError | GeneratorExit):
            return exc
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamTimeout("connect timeout", phase="connect")
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout("read timeout")
        if isinstance(exc, httpx.ConnectError):
            return UpstreamUnreachable(f"cannot connect: {exc}")
        if isinstance(exc, httpx.RemoteProtocolError):
            return UpstreamProtocolError("the upstream closed the connection or cut its response")
        if isinstance(exc, (httpx.HTTPError, OSError)):
            return UpstreamProtocolError(f"{type(exc).__name__}: {exc}")
        return exc

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply:
        with _mapped(self._map):
            resp = await self._get_client().post(url, content=body, headers=headers, timeout=self._timeout(timeouts))
        return Reply(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> StreamReply:
        client = self._get_client()
        with _mapped(self._map):
            request = client.build_request("POST", url, content=body, headers=headers, timeout=self._timeout(timeouts))
            resp = await client.send(request, stream=True)
        return _HttpxStream(resp, self._map)

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any:
        with _mapped(self._map):
            resp = await self._get_client().get(url, headers=headers, timeout=self._timeout(timeouts))
        return _json_or_error(resp.status_code, resp.content)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
