"""The two upstream clients side by side: one POST, one full streamed read.

    pytest benchmarks/test_bench_upstream_client.py -q --benchmark-group-by=group,param:impl

Each round is one ``client.post(...)`` (group ``upstream-client-post``) or one
``client.stream(...)`` read to its end and closed (group
``upstream-client-stream``) through :func:`fastroute.providers.transport.make_client`,
the seam fastroute's providers use, against the zero-latency stub of
``benchmarks/e2e.py`` running in its own process (so its CPU is not in the
figures).  The coroutines run on one uvloop event loop made once for the module
(``run_until_complete``), the loop fastroute's workers use; the same overhead
is in both columns.  The stub, the loop and the clients are fixtures of
``conftest.py``.  Keep-alive connections are warmed before measuring.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ceiling_app import STREAM_TOKENS

from fastroute.providers.transport import Timeouts, make_client

TIMEOUTS = Timeouts(connect=5.0, read=30.0)
HEADERS = {"content-type": "application/json", "accept": "application/json"}
STREAM_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}
BODY = (b'{"model":"bench-model","messages":[{"role":"system","content":"You are terse."},'
        b'{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":false}')
STREAM_BODY = BODY.replace(b'"stream":false', b'"stream":true')


@pytest.fixture(params=["aiohttp", "httpx"])
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def _client(clients: dict[str, Any], impl: str) -> Any:
    if impl not in clients:
        clients[impl] = make_client(impl)
    return clients[impl]


async def _post(client: Any, url: str) -> bytes:
    reply = await client.post(url, HEADERS, BODY, TIMEOUTS)
    assert reply.status == 200
    return reply.body


async def _stream(client: Any, url: str) -> bytes:
    reply = await client.stream(url, STREAM_HEADERS, STREAM_BODY, TIMEOUTS)
    try:
        assert reply.status == 200
        parts = [chunk async for chunk in reply.chunks()]
    finally:
        await reply.aclose()
    return b"".join(parts)


def test_post(benchmark: Any, impl: str, stub_url: str, loop: asyncio.AbstractEventLoop,
              clients: dict[str, Any]) -> None:
    benchmark.group = "upstream-client-post"
    client = _client(clients, impl)
    run = loop.run_until_complete
    for _ in range(20):  # open and warm the keep-alive connection
        run(_post(client, stub_url))
    body = benchmark(lambda: run(_post(client, stub_url)))
    assert b'"object":"chat.completion"' in body


def test_stream(benchmark: Any, impl: str, stub_url: str, loop: asyncio.AbstractEventLoop,
                clients: dict[str, Any]) -> None:
    benchmark.group = "upstream-client-stream"
    client = _client(clients, impl)
    run = loop.run_until_complete
    for _ in range(20):
        run(_stream(client, stub_url))
    body = benchmark(lambda: run(_stream(client, stub_url)))
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"chat.completion.chunk") == STREAM_TOKENS + 1  # the tokens and the usage chunk
