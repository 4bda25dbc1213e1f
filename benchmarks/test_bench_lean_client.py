"""CPU per upstream request: aiohttp, httpx and the lean client, plain and streamed.

    pytest benchmarks/test_bench_lean_client.py -q --benchmark-group-by=group,param:impl

Every figure is **CPU time of this process** (``time.process_time``) per request, not wall
time: the upstream runs in its own process, so its work and the time spent waiting for it
are in no column.  The e2e stub, the uvloop loop and the clients' dict (closed at the end) are
fixtures of ``conftest.py``, the plain call is ``test_bench_upstream_client.py``'s (warmed
keep-alive connections); the clients are made here, as the lean one is not yet in ``make_client``.

- ``lean-client-post``: one ``post`` answered with a JSON ``chat.completion``.
- ``lean-client-stream-20``: one ``stream`` read to its end and closed: twenty SSE events,
  each written by the upstream 1 ms after the one before, so each arrives on its own and
  every per-chunk cost is counted twenty times (wall time is ~20 ms a round; CPU is the figure).
- ``lean-client-stream-burst``: the e2e stub's stream (twenty-one events and ``[DONE]``, written
  at once): the cost of a stream's setup and end.

The ``floor`` column is no client: a bare ``asyncio.Protocol`` with ``httptools`` on one
connection (no pool, no timeouts, no error handling), what the kernel and the loop cost by
themselves on this machine.  What a client adds is its figure minus the floor.

Run as a script (``--stub PORT LIFETIME PARENT``) this file is the paced upstream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools
import pytest
from support import free_port, new_loop, running

if __name__ != "__main__":  # collected by pytest (benchmarks/ is on sys.path): the plain call's helpers
    from test_bench_upstream_client import (
        STREAM_BODY,
        STREAM_HEADERS,
        TIMEOUTS,
        _post,
        _stream,
    )

    from fastroute.providers.transport import Reply

HERE = Path(__file__).resolve()
CHUNKS = 20
GAP_S = 0.001
IMPLS = ["aiohttp", "httpx", "lean", "floor"]


# ── the paced upstream (its own process) ─────────────────────────────────

def paced_events() -> list[bytes]:
    """Nineteen ``chat.completion.chunk`` events and ``[DONE]``, each framed as one HTTP chunk."""
    events = []
    for i in range(CHUNKS - 1):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench-model",
                 "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "logprobs": None,
                              "finish_reason": "stop" if i == CHUNKS - 2 else None}]}
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events]


def paced_stub(port: int, lifetime_s: float, parent: int) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    writes = paced_events()
    writes[-1] += b"0\r\n\r\n"

    class Paced(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.parser = httptools.HttpRequestParser(self)
            self.timer: asyncio.TimerHandle | None = None

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.t.write(head)
            self._next(0)

        def _next(self, i: int) -> None:
            self.timer = None
            if self.t.is_closing():
                return
            self.t.write(writes[i])
            if i + 1 < len(writes):
                self.timer = loop.call_later(GAP_S, self._next, i + 1)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer is not None:
                self.timer.cancel()

    loop = new_loop()
    server = loop.run_until_complete(loop.create_server(Paced, "127.0.0.1", port))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    deadline = time.monotonic() + lifetime_s

    def watchdog() -> None:  # orphaned, or past its lifetime: stop
        if os.getppid() != parent or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(1.0, watchdog)

    loop.call_later(1.0, watchdog)
    try:
        loop.run_forever()
    finally:
        server.close()


# ── the floor ─────────────────────────────────────────────────────────────

class _FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.body, self.done = 0, [], False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.set_result(None)


class FloorClient:
    """Just enough of the seam for these benchmarks, over one kept connection."""

    name = "floor"

    def __init__(self) -> None:
        self._protos: dict[str, _FloorProtocol] = {}

    async def _send(self, url: str, body: bytes) -> _FloorProtocol:
        proto = self._protos.get(url)
        if proto is None:
            parts = urlsplit(url)
            _, proto = await asyncio.get_running_loop().create_connection(_FloorProtocol, parts.hostname, parts.port)
            self._protos[url] = proto
        proto.status, proto.body, proto.done = 0, [], False
        proto.transport.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
                              % (len(body), body))
        return proto

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Any) -> Any:
        proto = await self._send(url, body)
        while not proto.done:
            proto.waiter = asyncio.get_running_loop().create_future()
            await proto.waiter
        return Reply(proto.status, {}, b"".join(proto.body))

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Any) -> Any:
        proto = await self._send(url, body)
        while not proto.status:
            proto.waiter = asyncio.get_running_loop().create_future()
            await proto.waiter
        return _FloorStream(proto)

    async def aclose(self) -> None:
        for proto in self._protos.values():
            proto.transport.close()


class _FloorStream:
    def __init__(self, proto: _FloorProtocol) -> None:
        self.proto, self.status = proto, proto.status

    async def chunks(self) -> Any:
        proto = self.proto
        while True:
            if proto.body:
                body, proto.body = proto.body, []
                yield b"".join(body)
            elif proto.done:
                return
            else:
                proto.waiter = asyncio.get_running_loop().create_future()
                await proto.waiter

    async def aclose(self) -> None:
        pass


# ── fixtures ──────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def paced_url() -> Iterator[str]:
    """The paced upstream (this file as a script) in its own process."""
    port = free_port()
    with running([sys.executable, str(HERE), "--stub", str(port), "600", str(os.getpid())], port):
        yield f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def _client(clients: dict[str, Any], impl: str) -> Any:
    if impl not in clients:
        if impl == "lean":
            from fastroute.providers.lean import LeanClient

            clients[impl] = LeanClient()
        elif impl == "floor":
            clients[impl] = FloorClient()
        else:
            from fastroute.providers.transport import make_client

            clients[impl] = make_client(impl)
    return clients[impl]


def _measure(benchmark: Any, one_round: Any, requests: int, rounds: int) -> None:
    """``rounds`` rounds of ``one_round`` (``requests`` requests each), timed in CPU seconds."""
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:  # None under --benchmark-disable (one round, nothing timed)
        benchmark.extra_info["cpu_us_per_request"] = round(benchmark.stats.stats.mean / requests * 1e6, 1)


def _measure_many(benchmark: Any, loop: asyncio.AbstractEventLoop, call: Any, client: Any, url: str,
                  rounds: int) -> bytes:
    """``await call(client, url)`` 50 times (opening and warming the keep-alive connection), then
    ``rounds`` rounds of 20, each in one ``run_until_complete``: the figure is the client's, not the
    loop's entry.  The warm-up's last body."""

    async def many(n: int) -> bytes:
        for _ in range(n):
            body = await call(client, url)
        return body

    body = loop.run_until_complete(many(50))
    _measure(benchmark, lambda: loop.run_until_complete(many(20)), requests=20, rounds=rounds)
    return body


# ── the benchmarks ────────────────────────────────────────────────────────

@pytest.mark.benchmark(timer=time.process_time)
def test_post_cpu(benchmark: Any, impl: str, stub_url: str, loop: asyncio.AbstractEventLoop,
                  clients: dict[str, Any]) -> None:
    benchmark.group = "lean-client-post"
    body = _measure_many(benchmark, loop, _post, _client(clients, impl), stub_url, rounds=150)
    assert b'"object":"chat.completion"' in body


@pytest.mark.benchmark(timer=time.process_time)
def test_stream_20_cpu(benchmark: Any, impl: str, paced_url: str, loop: asyncio.AbstractEventLoop,
                       clients: dict[str, Any]) -> None:
    benchmark.group = "lean-client-stream-20"
    client = _client(clients, impl)
    run = loop.run_until_complete
    counts: list[int] = []

    async def one() -> None:
        reply = await client.stream(paced_url, STREAM_HEADERS, STREAM_BODY, TIMEOUTS)
        try:
            assert reply.status == 200
            parts = [chunk async for chunk in reply.chunks()]
        finally:
            await reply.aclose()
        body = b"".join(parts)
        assert body.endswith(b"data: [DONE]\n\n") and body.count(b"chat.completion.chunk") == CHUNKS - 1
        counts.append(len(parts))

    for _ in range(5):
        run(one())
    _measure(benchmark, lambda: run(one()), requests=1, rounds=60)
    # each event arrived on its own: the per-chunk path ran (nearly) twenty times a request
    benchmark.extra_info["chunks_per_request"] = round(sum(counts) / len(counts), 1)
    assert sum(counts) / len(counts) > CHUNKS / 2


@pytest.mark.benchmark(timer=time.process_time)
def test_stream_burst_cpu(benchmark: Any, impl: str, stub_url: str, loop: asyncio.AbstractEventLoop,
                          clients: dict[str, Any]) -> None:
    benchmark.group = "lean-client-stream-burst"
    body = _measure_many(benchmark, loop, _stream, _client(clients, impl), stub_url, rounds=100)
    assert body.endswith(b"data: [DONE]\n\n")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--stub":
    paced_stub(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
