"""The lean upstream client against real servers on 127.0.0.1, on asyncio's loop and on uvloop.

An aiohttp web server where an ordinary server will do; raw asyncio servers for the odd cases
(a server closing idle connections, odd chunk sizes, a cut body, a server that never answers);
TLS with a certificate made in the test; and fastroute's own providers over the seam, against
the shared stub upstream.  Keep-alive reuse is seen from the server's side: the client port of
each request.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from fastroute.canonical import ChatRequest, Message, TextPart
from fastroute.config import config_from_dict
from fastroute.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnreachable
from fastroute.providers import build_providers
from fastroute.providers.lean import LeanClient
from fastroute.providers.transport import Timeouts
from tests.stub_upstream import StubUpstream

T = Timeouts(connect=5.0, read=10.0)
JSON = {"content-type": "application/json", "accept": "application/json"}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine to its end on a fresh loop of the kind the test is parametrized with."""
    def runner(coro: Awaitable[Any]) -> Any:
        if request.param == "uvloop":
            import uvloop

            return uvloop.run(coro)  # type: ignore[arg-type]
        return asyncio.run(coro)  # type: ignore[arg-type]
    return runner


# ── servers ───────────────────────────────────────────────────────────────

class Web:
    """An aiohttp server: every request recorded with the client port it came from."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = web.Application()
        self.url = ""

    def record(self, request: web.Request, body: bytes) -> None:
        self.seen.append({"method": request.method, "path": request.path_qs, "body": body,
                          "headers": {k.lower(): v for k, v in request.headers.items()},
                          "port": request.transport.get_extra_info("peername")[1]})  # type: ignore[union-attr]

    @property
    def ports(self) -> list[int]:
        return [s["port"] for s in self.seen]


@asynccontextmanager
async def web_server(routes: Callable[[Web], None], ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Web]:
    server = Web()
    routes(server)
    runner = web.AppRunner(server.app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def echo_routes(server: Web) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        server.record(request, body)
        return web.json_response({"got": body.decode(), "n": len(server.seen)}, headers={"x-upstream": "yes"})

    async def stream(request: web.Request) -> web.StreamResponse:
        server.record(request, await request.read())
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"data: %d\n\n" % i)
        await resp.write_eof()
        return resp

    async def moved(request: web.Request) -> web.Response:
        server.record(request, await request.read())
        return web.Response(status=307, headers={"location": request.query["to"]}, text="moved")

    async def cookie(request: web.Request) -> web.Response:
        server.record(request, await request.read())
        resp = web.json_response({"cookie": request.headers.get("cookie")})
        resp.set_cookie("session", "user-A-secret")
        return resp

    async def status(request: web.Request) -> web.Response:
        server.record(request, await request.read())
        return web.Response(status=int(request.match_info["code"]), body=request.query.get("body", "").encode(),
                            content_type="application/json")

    async def gzipped(request: web.Request) -> web.Response:
        server.record(request, await request.read())
        return web.Response(body=gzip.compress(b'{"zipped": true}' * 100), content_type="application/json",
                            headers={"content-encoding": "gzip"})

    server.app.router.add_route("*", "/echo", echo)
    server.app.router.add_route("POST", "/stream", stream)
    server.app.router.add_route("*", "/moved", moved)
    server.app.router.add_route("*", "/cookie", cookie)
    server.app.router.add_route("*", "/status/{code}", status)
    server.app.router.add_route("*", "/gzip", gzipped)


class Raw:
    """A raw asyncio server: ``handle(reader, writer)`` per connection; it counts connections and
    requests (``read_request`` records each) and notes each connection's end as the server saw it."""

    def __init__(self, handle: Callable[[Raw, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.handle = handle
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection number, head, body)
        self.ended = 0  # connections the client closed (EOF or reset seen by the server)
        self.changed = asyncio.Event()
        self.port = 0
        self.state: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.transport.set_write_buffer_limits(high=65536)
        try:
            await self.handle(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """One request, or None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_ended()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append((self.connections, head, body))
        self.changed.set()
        return head, body

    async def until_client_ends(self, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.client_ended()

    def client_ended(self) -> None:
        self.ended += 1
        self.changed.set()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds (the test's own timeout ends a wait that never does)."""
        while not predicate():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@asynccontextmanager
async def raw_server(handle: Callable[[Raw, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                     ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Raw]:
    raw = Raw(handle)
    server = await asyncio.start_server(raw._conn, "127.0.0.1", 0, ssl=ssl_context)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


async def keep_answering(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await raw.read_request(reader) is not None:
        writer.write(OK)
        await writer.drain()


# ── plain requests ────────────────────────────────────────────────────────

def test_post_sends_one_well_formed_request_and_reads_the_answer(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            try:
                reply = await client.post(server.url + "/echo?x=1&y=%20", {**JSON, "authorization": "Bearer k"},
                                          b'{"hello": "world"}', T)
            finally:
                await client.aclose()
        assert reply.status == 200
        assert orjson.loads(reply.body) == {"got": '{"hello": "world"}', "n": 1}
        assert reply.headers["x-upstream"] == "yes" and reply.headers["content-type"].startswith("application/json")
        [seen] = server.seen
        assert seen["method"] == "POST" and seen["path"] == "/echo?x=1&y=%20"
        assert seen["headers"]["host"] == server.url.removeprefix("http://")
        assert seen["headers"]["content-length"] == "18" and seen["headers"]["authorization"] == "Bearer k"
        # nothing added that a caller did not ask for: no user agent, no cookie, no compression asked
        assert not {"user-agent", "cookie", "accept-encoding"} & set(seen["headers"])

    run(main())


def test_keep_alive_reuses_one_connection_for_sequential_requests(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            try:
                for i in range(5):
                    assert (await client.post(server.url + "/echo", JSON, b"%d" % i, T)).status == 200
                reply = await client.stream(server.url + "/stream", JSON, b"{}", T)
                assert await reply.read() == b"".join(b"data: %d\n\n" % i for i in range(5))
                await reply.aclose()
                assert await client.get_json(server.url + "/echo", {}, T) == {"got": "", "n": 7}
            finally:
                await client.aclose()
        assert len(set(server.ports)) == 1, server.ports  # one connection, seven requests

    run(main())


def test_concurrent_requests_each_get_a_connection_and_idle_ones_are_bounded(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient(max_idle=2)
            try:
                await asyncio.gather(*(client.post(server.url + "/echo", JSON, b"a", T) for _ in range(4)))
                first = set(server.ports)
                server.seen.clear()
                await asyncio.gather(*(client.post(server.url + "/echo", JSON, b"b", T) for _ in range(4)))
                second = server.ports
            finally:
                await client.aclose()
        assert len(first) == 4  # none waited for another's connection
        # two were kept: at most two of the next four found one; the other two opened their own
        assert len(set(second)) == 4 and len(set(second) & first) == 2

    run(main())


def test_a_cookie_is_never_kept(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            try:
                first = await client.post(server.url + "/cookie", JSON, b"", T)
                second = await client.post(server.url + "/cookie", JSON, b"", T)
            finally:
                await client.aclose()
        assert "set-cookie" in first.headers
        assert orjson.loads(second.body) == {"cookie": None}

    run(main())


def test_a_redirect_is_returned_not_followed(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as target, web_server(echo_routes) as server:
            client = LeanClient()
            try:
                to = f"?to={target.url}/echo"
                reply = await client.post(server.url + "/moved" + to, {"authorization": "Bearer key"}, b"{}", T)
                stream = await client.stream(server.url + "/moved" + to, {}, b"{}", T)
                await stream.aclose()
                with pytest.raises(UpstreamProtocolError, match="redirect"):
                    await client.get_json(server.url + "/moved" + to, {}, T)
            finally:
                await client.aclose()
        assert (reply.status, stream.status) == (307, 307)
        assert reply.headers["location"] == f"{target.url}/echo" and reply.body == b"moved"
        assert len(server.seen) == 3 and target.seen == []
        assert len(set(server.ports)) == 1  # the 307 stream was all in: its connection went back to the pool

    run(main())


def test_get_json_reads_json_and_refuses_errors_and_garbage(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            try:
                assert await client.get_json(server.url + "/status/200?body=[1,2]", {}, T) == [1, 2]
                with pytest.raises(UpstreamProtocolError, match="HTTP 500"):
                    await client.get_json(server.url + "/status/500", {}, T)
                with pytest.raises(UpstreamProtocolError, match="invalid JSON"):
                    await client.get_json(server.url + "/status/200?body=nope", {}, T)
                assert (await client.post(server.url + "/status/204", {}, b"", T)).body == b""
            finally:
                await client.aclose()
        assert [s["method"] for s in server.seen] == ["GET", "GET", "GET", "POST"]
        assert all("content-length" not in s["headers"] for s in server.seen[:3])  # a GET has no body

    run(main())


def test_credentials_in_the_url_are_sent_unless_the_caller_sends_its_own(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            with_user = server.url.replace("http://", "http://us%40er:p%3Ass@")
            try:
                await client.post(with_user + "/echo", {}, b"", T)
                await client.post(with_user + "/echo", {"authorization": "Bearer own"}, b"", T)
            finally:
                await client.aclose()
        assert [s["headers"]["authorization"] for s in server.seen] == [
            "Basic " + base64.b64encode(b"us@er:p:ss").decode(), "Bearer own"]
        assert server.seen[0]["headers"]["host"] == server.url.removeprefix("http://")

    run(main())


def test_an_ipv6_literal_upstream(run: Any) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")

    async def main() -> tuple[str, int]:
        async def handle(request: web.Request) -> web.Response:
            return web.json_response({"host": request.headers["host"]})

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "::1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = LeanClient()
        try:
            return (await client.get_json(f"http://[::1]:{port}/", {}, T))["host"], port
        finally:
            await client.aclose()
            await runner.cleanup()

    host, port = run(main())
    assert host == f"[::1]:{port}"


def test_a_compressed_answer_is_decoded(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient()
            try:
                reply = await client.post(server.url + "/gzip", {"accept-encoding": "gzip"}, b"", T)
                stream = await client.stream(server.url + "/gzip", {"accept-encoding": "gzip"}, b"", T)
                streamed = await stream.read()
            finally:
                await client.aclose()
        assert reply.body == streamed == b'{"zipped": true}' * 100

    run(main())


def test_a_body_that_cannot_be_decoded_is_a_protocol_error(run: Any) -> None:
    zipped = gzip.compress(b"fine " * 1000)
    broken = zipped[:-8] + bytes(b ^ 0xFF for b in zipped[-8:-4]) + zipped[-4:]  # a wrong checksum

    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            if raw.connections == 3:  # read to the close
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n" + broken)
                await writer.drain()
                return
            if raw.connections == 4:  # framed whole, but the compressed stream stops half way
                half = zipped[:len(zipped) // 2]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(half), half))
                continue
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(broken), broken))

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                with pytest.raises(UpstreamProtocolError, match="could not be decoded"):
                    await client.post(raw.url, {}, b"", T)
                stream = await client.stream(raw.url, {}, b"", T)
                with pytest.raises(UpstreamProtocolError, match="could not be decoded"):
                    await stream.read()
                with pytest.raises(UpstreamProtocolError, match="could not be decoded"):
                    await client.post(raw.url, {}, b"", T)
                with pytest.raises(UpstreamProtocolError, match="could not be decoded"):
                    await client.post(raw.url, {}, b"", T)
            finally:
                await client.aclose()
        assert raw.connections == 4  # a connection that failed is never reused

    run(main())


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(run: Any) -> None:
    async def main() -> None:
        async with raw_server(keep_answering) as raw:
            client = LeanClient()
            try:
                with pytest.raises(ValueError, match="x-evil"):
                    await client.post(raw.url, {"x-evil": "a\r\nx-injected: 1"}, b"", T)
            finally:
                await client.aclose()
        assert raw.connections == 0

    run(main())


def test_caller_headers_cannot_override_the_framing(run: Any) -> None:
    async def main() -> None:
        async with raw_server(keep_answering) as raw:
            client = LeanClient()
            try:
                await client.post(raw.url + "/p", {"Content-Length": "999", "host": "evil", "connection": "close",
                                                  "x-kept": "1"}, b"abc", T)
            finally:
                await client.aclose()
        [(_, head, body)] = raw.requests
        assert body == b"abc"
        lines = head.lower().split(b"\r\n")
        assert lines[0] == b"post /p http/1.1"
        assert lines.count(b"content-length: 3") == 1 and not any(b"999" in ln or b"evil" in ln for ln in lines)
        assert b"x-kept: 1" in lines and b"connection: close" not in lines

    run(main())


# ── body framings ─────────────────────────────────────────────────────────

def test_chunked_bodies_with_odd_chunk_sizes_and_extensions(run: Any) -> None:
    huge = bytes(range(256)) * 12288  # 3 MiB in one chunk
    pieces = [b"a", b"b", b"\r\n", huge, b"x" * 17, b"z"]

    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            for i, piece in enumerate(pieces):
                ext = b";name=value;flag" if i % 2 else b""
                wire += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
            wire += b"0\r\ntrailer-one: 1\r\n\r\n"
            # the first 600 bytes one at a time (a chunk header split everywhere), then the rest
            for i in range(600):
                writer.write(wire[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(wire[600:])
            await writer.drain()

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                reply = await client.post(raw.url, {}, b"", T)
                stream = await client.stream(raw.url, {}, b"", T)
                parts = [chunk async for chunk in stream.chunks()]
            finally:
                await client.aclose()
        assert reply.status == 200 and reply.body == b"".join(pieces)
        assert b"".join(parts) == b"".join(pieces) and len(parts) > 3  # yielded as it came, not at the end
        assert raw.connections == 1  # both answers ended cleanly: one connection

    run(main())


def test_a_content_length_body_written_in_pieces(run: Any) -> None:
    body = b"0123456789" * 1000

    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
            await asyncio.sleep(0.01)
            writer.write(b"ngth: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 1500):
                await asyncio.sleep(0.002)
                writer.write(body[i:i + 1500])

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                assert (await client.post(raw.url, {}, b"", T)).body == body
                stream = await client.stream(raw.url, {}, b"", T)
                parts = [chunk async for chunk in stream.chunks()]
            finally:
                await client.aclose()
        assert b"".join(parts) == body and len(parts) > 1
        assert raw.connections == 1

    run(main())


def test_a_body_read_to_the_close_and_its_connection_not_reused(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await raw.read_request(reader) is None:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nno length")
        await asyncio.sleep(0.01)
        writer.write(b", until the close")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                first = await client.post(raw.url, {}, b"", T)
                stream = await client.stream(raw.url, {}, b"", T)
                second = await stream.read()
            finally:
                await client.aclose()
        assert first.body == second == b"no length, until the close"
        assert raw.connections == 2 and len(raw.requests) == 2

    run(main())


def test_an_informational_answer_before_the_real_one(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
            await asyncio.sleep(0.01)
            writer.write(OK)

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                first = await client.post(raw.url, {}, b"", T)
                second = await client.post(raw.url, {}, b"", T)
            finally:
                await client.aclose()
        assert first.status == second.status == 200 and first.body == b'{"ok":true}'
        assert "link" not in first.headers
        assert raw.connections == 1

    run(main())


def test_connection_close_and_http_1_0_answers_are_not_reused(run: Any) -> None:
    answers = [b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi",
               b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi"]

    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await raw.read_request(reader) is not None:
            writer.write(answers[(raw.connections - 1) % 2])
            await raw.until_client_ends(reader)  # the server leaves it open: the client must close it

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                for _ in range(4):
                    assert (await client.post(raw.url, {}, b"", T)).body == b"hi"
                await raw.wait(lambda: raw.ended == 4)
            finally:
                await client.aclose()
        assert raw.connections == 4

    run(main())


# ── connections the upstream closes ───────────────────────────────────────

def test_a_server_closing_idle_connections(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await raw.read_request(reader) is not None:
            writer.write(OK)  # keep-alive by its headers...
            await writer.drain()
            await asyncio.sleep(0.05)  # ...but closed once idle a moment
            raw.state["closed"] = raw.state.get("closed", 0) + 1
            raw.changed.set()

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                assert (await client.post(raw.url, {}, b"", T)).status == 200
                await raw.wait(lambda: raw.state.get("closed") == 1)
                await asyncio.sleep(0.05)  # the client's loop sees the close
                assert (await client.post(raw.url, {}, b"", T)).status == 200
            finally:
                await client.aclose()
        assert raw.connections == 2 and len(raw.requests) == 2

    run(main())


def test_a_pooled_connection_closed_before_any_byte_is_retried_once_on_a_new_one(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # answers the first request of a connection; reads the second and closes without a byte
        if await raw.read_request(reader) is None:
            return
        writer.write(OK)
        await writer.drain()
        await raw.read_request(reader)

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                assert (await client.post(raw.url, {}, b"1", T)).status == 200
                assert (await client.post(raw.url, {}, b"2", T)).status == 200  # closed on it, then again, fresh
                stream = await client.stream(raw.url, {}, b"3", T)  # the same for a stream
                assert await stream.read() == b'{"ok":true}'
            finally:
                await client.aclose()
        assert [(conn, body) for conn, _, body in raw.requests] == [(1, b"1"), (1, b"2"), (2, b"2"), (2, b"3"),
                                                                  (3, b"3")]

    run(main())


def test_the_retry_happens_once_and_a_fresh_connection_is_never_retried(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await raw.read_request(reader) is None:
            return
        if raw.state.get("answer", True):
            writer.write(OK)
            await writer.drain()
            await raw.read_request(reader)  # then: the next request is read and not answered

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                assert (await client.post(raw.url, {}, b"ok", T)).status == 200
                raw.state["answer"] = False  # from now on nothing is answered
                with pytest.raises(UpstreamProtocolError, match="closed the connection"):
                    await client.post(raw.url, {}, b"pooled", T)
                with pytest.raises(UpstreamProtocolError, match="closed the connection"):
                    await client.post(raw.url, {}, b"fresh", T)
            finally:
                await client.aclose()
        # the pooled one failed, went once more on a new connection, and stopped; the fresh one, once
        assert [body for _, _, body in raw.requests] == [b"ok", b"pooled", b"pooled", b"fresh"]

    run(main())


def test_bytes_on_an_idle_connection_make_it_unusable(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await raw.read_request(reader) is None:
            return
        writer.write(OK + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")  # one answer too many
        await raw.until_client_ends(reader)

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                assert (await client.post(raw.url, {}, b"", T)).body == b'{"ok":true}'
                await raw.wait(lambda: raw.ended == 1)  # the client dropped it
                assert (await client.post(raw.url, {}, b"", T)).status == 200
            finally:
                await client.aclose()
        assert raw.connections == 2

    run(main())


def test_idle_connections_age_out(run: Any) -> None:
    async def main() -> None:
        async with web_server(echo_routes) as server:
            client = LeanClient(keepalive=0.05)
            try:
                await client.post(server.url + "/echo", {}, b"", T)
                await asyncio.sleep(0.1)
                await client.post(server.url + "/echo", {}, b"", T)
            finally:
                await client.aclose()
        assert len(set(server.ports)) == 2

    run(main())


# ── failures ──────────────────────────────────────────────────────────────

def test_a_cut_body_is_a_protocol_error(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        if raw.connections % 2:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 500)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nhalf")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.transport.abort()

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                with pytest.raises(UpstreamProtocolError, match="cut off"):
                    await client.post(raw.url, {}, b"", T)
                stream = await client.stream(raw.url, {}, b"", T)
                got = []
                with pytest.raises(UpstreamProtocolError, match="cut off"):
                    async for chunk in stream.chunks():
                        got.append(chunk)
                await stream.aclose()
            finally:
                await client.aclose()
        assert b"".join(got).startswith(b"hello")  # what came is handed on before the error

    run(main())


def test_a_closed_connection_before_the_head_and_garbage_are_protocol_errors(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-le" if raw.connections == 1 else b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                with pytest.raises(UpstreamProtocolError, match="closed the connection"):
                    await client.post(raw.url, {}, b"", T)
                with pytest.raises(UpstreamProtocolError, match="not valid HTTP"):
                    await client.post(raw.url, {}, b"", T)
            finally:
                await client.aclose()

    run(main())


def test_connection_refused_is_unreachable(run: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed

    async def main() -> None:
        client = LeanClient()
        try:
            with pytest.raises(UpstreamUnreachable, match="cannot connect"):
                await client.post(f"http://127.0.0.1:{port}/", {}, b"", T)
            with pytest.raises(UpstreamUnreachable, match="cannot connect"):
                await client.stream(f"http://127.0.0.1:{port}/", {}, b"", T)
            with pytest.raises(UpstreamUnreachable):
                await client.post("ftp://127.0.0.1/", {}, b"", T)
        finally:
            await client.aclose()

    run(main())


def test_a_connect_timeout(run: Any) -> None:
    """A listening socket whose accept queue is full: the kernel drops the SYN, the connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the queue; never accepted

    async def main() -> None:
        client = LeanClient()
        try:
            with pytest.raises(UpstreamTimeout, match="connect timeout") as caught:
                await client.post(f"http://127.0.0.1:{port}/", {}, b"", Timeouts(connect=0.2, read=10.0))
            assert caught.value.phase == "connect"
        finally:
            await client.aclose()

    try:
        run(main())
    finally:
        filler.close()
        listener.close()


def test_a_read_timeout_before_the_head_and_between_chunks(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        if raw.connections == 2:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await raw.until_client_ends(reader)  # then silence, until the client gives up

    async def main() -> None:
        quick = Timeouts(connect=5.0, read=0.2)
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                with pytest.raises(UpstreamTimeout, match="read timeout") as caught:
                    await client.post(raw.url, {}, b"", quick)
                assert caught.value.phase == "read"
                stream = await client.stream(raw.url, {}, b"", quick)
                got = []
                with pytest.raises(UpstreamTimeout, match="read timeout"):
                    async for chunk in stream.chunks():
                        got.append(chunk)
                assert got == [b"first"]
                await raw.wait(lambda: raw.ended == 2)  # each timed-out connection was closed
            finally:
                await client.aclose()

    run(main())


# ── streams: backpressure, cancellation, closing ──────────────────────────

def test_a_slow_reader_holds_the_upstream_back(run: Any) -> None:
    """The server writes 256 MiB as fast as the client takes it: while the reader sleeps, the
    server's writes block, so what it managed to send stays far below what it wanted to."""
    total, block = 256 << 20, 64 << 10

    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        data = b"\x5a" * block
        raw.state["sent"] = 0
        for _ in range(total // block):
            writer.write(data)
            await writer.drain()
            raw.state["sent"] += block

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient(stream_buffer=65536)
            # the reader's pauses are longer than the read timeout: waiting on the consumer is not the upstream's fault
            stream = await client.stream(raw.url, {}, b"", Timeouts(connect=5.0, read=0.2))
            received, stalls = 0, []
            try:
                async for chunk in stream.chunks():
                    assert chunk.count(b"\x5a") == len(chunk)
                    received += len(chunk)
                    if len(stalls) < 2 and received > (1 + len(stalls) * 64) << 20:
                        await asyncio.sleep(0.5)
                        stalls.append(raw.state["sent"] - received)  # in flight: kernel buffers and ours
            finally:
                await stream.aclose()
                await client.aclose()
        assert received == total
        assert max(stalls) < 32 << 20, stalls  # ~4 MiB of kernel buffers here; never paused, 60-190 MiB

    run(main())


def test_cancelling_the_reader_mid_stream_closes_the_connection(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await raw.until_client_ends(reader)  # never ends by itself

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                got: list[bytes] = []
                first = asyncio.Event()

                async def consume() -> None:
                    stream = await client.stream(raw.url, {}, b"", T)
                    try:
                        async for chunk in stream.chunks():
                            got.append(chunk)
                            first.set()
                    finally:
                        await stream.aclose()

                task = asyncio.ensure_future(consume())
                await asyncio.wait_for(first.wait(), 10)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await raw.wait(lambda: raw.ended == 1)  # the server saw the client go

                # a caller cancelled while it waits for a whole answer: the same
                post = asyncio.ensure_future(client.post(raw.url, {}, b"", T))
                await raw.wait(lambda: len(raw.requests) == 2)
                post.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await post
                await raw.wait(lambda: raw.ended == 2)
            finally:
                await client.aclose()
        assert got == [b"first"] and raw.connections == 2

    run(main())


def test_closing_an_unfinished_stream_closes_its_connection_and_a_finished_one_is_reused(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            if raw.state.get("finish"):
                writer.write(b"0\r\n\r\n")
        raw.state["ends"] = raw.state.get("ends", 0) + 1

    async def main() -> None:
        async with raw_server(handle) as raw:
            client = LeanClient()
            try:
                stream = await client.stream(raw.url, {}, b"", T)
                async for _ in stream.chunks():
                    break
                await stream.aclose()  # unfinished: closed, not reused
                await raw.wait(lambda: raw.ended == 1)
                raw.state["finish"] = True
                for _ in range(3):
                    stream = await client.stream(raw.url, {}, b"", T)
                    assert await stream.read() == b"first"
                    await stream.aclose()
            finally:
                await client.aclose()
        assert raw.connections == 2  # the three finished streams shared one

    run(main())


def test_an_answer_that_ended_while_reading_was_paused_leaves_a_usable_connection(run: Any) -> None:
    async def main() -> None:
        async with raw_server(keep_answering) as raw:
            client = LeanClient(stream_buffer=4)  # the 11-byte body fills the buffer: reading pauses
            try:
                stream = await client.stream(raw.url, {}, b"", T)
                await asyncio.sleep(0.05)  # the whole answer is in, unread
                await stream.aclose()  # all in: the connection goes back to the pool
                reply = await client.post(raw.url, {}, b"", Timeouts(connect=5.0, read=2.0))
            finally:
                await client.aclose()
        assert reply.body == b'{"ok":true}' and raw.connections == 1

    run(main())


def test_a_stream_yields_each_chunk_the_moment_it_arrives(run: Any) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(3):
            writer.write(b"1\r\n%d\r\n" % i)
            await raw.state["taken"].get()  # the next one only once the client has this one
        writer.write(b"0\r\n\r\n")

    async def main() -> None:
        async with raw_server(handle) as raw:
            raw.state["taken"] = asyncio.Queue()
            client = LeanClient()
            try:
                stream = await client.stream(raw.url, {}, b"", T)
                got = []
                async for chunk in stream.chunks():
                    got.append(chunk)
                    raw.state["taken"].put_nowait(chunk)
            finally:
                await client.aclose()
        assert got == [b"0", b"1", b"2"]

    run(main())


def test_the_client_works_again_on_a_new_loop_and_after_aclose(run: Any) -> None:
    client = LeanClient()

    async def once() -> int:
        async with web_server(echo_routes) as server:
            reply = await client.post(server.url + "/echo", {}, b"", T)
            return reply.status

    assert run(once()) == 200
    assert run(once()) == 200  # a second loop: the first loop's connections are left behind

    async def after_close() -> int:
        async with web_server(echo_routes) as server:
            await client.post(server.url + "/echo", {}, b"", T)
            await client.aclose()
            return (await client.post(server.url + "/echo", {}, b"", T)).status

    assert run(after_close()) == 200
    run(client.aclose())


def test_no_proxy_is_taken_from_the_environment(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with raw_server(keep_answering) as proxy, web_server(echo_routes) as server:
            for name in ("http_proxy", "https_proxy", "all_proxy"):
                monkeypatch.setenv(name, proxy.url)
                monkeypatch.setenv(name.upper(), proxy.url)
            monkeypatch.delenv("no_proxy", raising=False)
            monkeypatch.delenv("NO_PROXY", raising=False)
            client = LeanClient()
            try:
                assert (await client.post(server.url + "/echo", {}, b"", T)).status == 200
            finally:
                await client.aclose()
        assert proxy.connections == 0 and len(server.seen) == 1

    run(main())


# ── TLS ───────────────────────────────────────────────────────────────────

def _server_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def test_tls_with_a_self_signed_certificate(run: Any, certificate: tuple[Path, Path]) -> None:
    async def main() -> None:
        async with web_server(echo_routes, _server_ssl(certificate)) as server:
            client = LeanClient(ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
            try:
                for i in range(3):
                    reply = await client.post(server.url + "/echo", JSON, b"%d" % i, T)
                    assert orjson.loads(reply.body)["got"] == str(i)
                stream = await client.stream(server.url + "/stream", JSON, b"{}", T)
                assert await stream.read() == b"".join(b"data: %d\n\n" % i for i in range(5))
                port = server.url.rsplit(":", 1)[1]
                assert (await client.post(f"https://localhost:{port}/echo", JSON, b"", T)).status == 200
            finally:
                await client.aclose()
        assert server.url.startswith("https://")
        assert len(set(server.ports[:4])) == 1  # keep-alive over TLS too

    run(main())


def test_tls_read_to_close_and_cut(run: Any, certificate: tuple[Path, Path]) -> None:
    async def handle(raw: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        if raw.connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")
            await writer.drain()
            writer.close()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
            await writer.drain()
            writer.close()

    async def main() -> None:
        async with raw_server(handle, _server_ssl(certificate)) as raw:
            client = LeanClient(ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
            url = f"https://127.0.0.1:{raw.port}/"
            try:
                assert (await client.post(url, {}, b"", T)).body == b"until the close"
                with pytest.raises(UpstreamProtocolError, match="cut off"):
                    await client.post(url, {}, b"", T)
            finally:
                await client.aclose()

    run(main())


def test_tls_refuses_a_certificate_it_does_not_trust(run: Any, certificate: tuple[Path, Path]) -> None:
    async def main() -> None:
        async with web_server(echo_routes, _server_ssl(certificate)) as server:
            client = LeanClient()  # the system's trust store: this certificate is in none
            try:
                with pytest.raises(UpstreamUnreachable, match="certificate verify failed"):
                    await client.post(server.url + "/echo", {}, b"", T)
            finally:
                await client.aclose()
        assert server.seen == []

    run(main())


# ── fastroute's providers over the seam ───────────────────────────────────

def _stub_provider(stub: StubUpstream, client: LeanClient, **extra: Any) -> Any:
    config = config_from_dict({"providers": [{"name": "stub", "format": "openai", "base_url": stub.base_url,
                                              **extra}],
                               "routers": [{"type": "prefix", "model_prefix": "", "provider": "stub"}]})
    return build_providers(config, client)["stub"]


def _ask(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", [TextPart("hi there")])], max_tokens=8)


def test_a_provider_sends_and_streams_through_the_lean_client(run: Any, stub: StubUpstream) -> None:
    async def main() -> tuple[str, str, list[str]]:
        client = LeanClient()
        provider = _stub_provider(stub, client)
        try:
            answer = await provider.send(_ask("stub-model"))
            events = [e async for e in await provider.open_stream(_ask("stub-model"))]
            text = "".join(e.text or "" for e in events if e.kind == "text")
            cut = [e async for e in await provider.open_stream(_ask("stub-cut"))]
            return answer.text(), text, [e.kind for e in cut]
        finally:
            await client.aclose()

    sent, streamed, cut = run(main())
    assert sent == "stub: hi there" and streamed == "stub: hi there"
    assert cut[-1] == "error"  # a cut stream ends with an error event, never a clean end


def test_a_provider_read_timeout_through_the_lean_client(run: Any, stub: StubUpstream) -> None:
    async def main() -> None:
        client = LeanClient()
        provider = _stub_provider(stub, client, read_timeout=0.3)
        try:
            with pytest.raises(UpstreamTimeout) as caught:
                await provider.send(_ask("stub-hang"))
            assert caught.value.provider == "stub" and caught.value.phase == "read"
        finally:
            await client.aclose()

    run(main())
