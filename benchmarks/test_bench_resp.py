"""What one ``EVALSHA`` of the counters' admit script (``TAKE_LUA``) costs the event loop:
fastroute's lean RESP2 client (``fastroute/governance/resp.py``) against redis-py's asyncio client.

    pytest benchmarks/test_bench_resp.py -q --benchmark-group-by=group,param:impl

The timer is **the event loop thread's CPU** (``timer=time.thread_time``, the kernel's part of
the socket calls included): what a command takes from the loop, which bounds a worker's
throughput.  A round is 1,000 scripts on one uvloop loop made once for the module, so **ms per
round = µs per command**; the wall time of the median round goes in ``extra_info``
(``wall_us_per_call``), with redis-server's CPU per command (``redis_us_per_call``).

- ``resp-evalsha``: one script after the other, as one request admits itself (a round trip each).
- ``resp-evalsha-concurrent``: the same 1,000 scripts 100 at a time (``asyncio.gather``), as a
  busy worker's requests do: 100 scripts in flight on the one connection (the lean client
  writes the ones sent while others are in flight together, in one write).

``impl``: ``floor`` (the same calls answered at once by a coroutine: what the harness itself
costs, the keys made and, 100 at a time, ``gather``'s tasks), ``resp`` (the lean client) and ``redis-py`` (``redis.asyncio``, set up as
``RedisCounters`` sets it up today: one quick retry, socket timeouts, a health check every 15 s;
no hiredis on this machine).  Both run the same script with the same keys and arguments
(every limit set, none reached: each call counts a request).  At the end the module prints the
figures and redis-py's over the lean client's (medians; a ratio, never an assert: the machine's
load moves them).  Redis is a real ``redis-server`` on this machine (skipped without one).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from fastroute.governance.counters import TAKE_LUA, WINDOW_MS

N = 1000
CONCURRENT = 100
IMPLS = ["floor", "resp", "redis-py"]


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def take(impl: str, redis_server: Any, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[], Awaitable[Any]]]:
    """One call of the admit script as ``RedisCounters._take`` makes it, with the chosen client."""
    prefix = f"bench-resp-{impl}-{os.getpid()}-{time.monotonic_ns()}:lim:{{bench}}:"
    client: Any = None
    call: Callable[[Any, Any], Awaitable[Any]]
    if impl == "floor":
        async def answered(keys: Any, args: Any) -> list[int]:
            return [0, 0, 1, 0, 0, 0]

        call = answered
    elif impl == "resp":
        from fastroute.governance.resp import RespClient

        client = RespClient(redis_server.url, timeout_s=1.0)
        call = client.script(TAKE_LUA)  # script(keys, args)
    else:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.from_url(redis_server.url, socket_connect_timeout=1.0, socket_timeout=1.0,
                                health_check_interval=15, retry=Retry(NoBackoff(), 1))
        call = client.register_script(TAKE_LUA)  # script(keys, args) too

    def one() -> Awaitable[Any]:
        now_ms = int(time.time() * 1000)
        minute, elapsed = divmod(now_ms, WINDOW_MS)
        keys = (f"{prefix}m:{minute}", f"{prefix}m:{minute - 1}", f"{prefix}s:2026-05")
        return call(keys, (elapsed, 10**9, 10**12, 10**12, (minute + 2) * WINDOW_MS + 60_000 - now_ms))

    assert loop.run_until_complete(one())[0] == 0  # connected, the script loaded, admitted
    yield one
    if client is not None:
        loop.run_until_complete(client.close() if impl == "resp" else client.aclose())


def _record(benchmark: Any, figures: dict[str, float], name: str, wall: list[float], redis_cpu: float) -> None:
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing measured
        return
    rounds = len(benchmark.stats.stats.data)
    figures[name] = us = benchmark.stats.stats.median / N * 1e6
    benchmark.extra_info["us_per_call"] = round(us, 2)
    figures[name + " wall"] = benchmark.extra_info["wall_us_per_call"] = round(sorted(wall)[len(wall) // 2] / N * 1e6, 2)
    figures[name + " redis"] = benchmark.extra_info["redis_us_per_call"] = round(redis_cpu / (N * (rounds + 1)) * 1e6, 2)


@pytest.mark.benchmark(timer=time.thread_time)
def test_evalsha(benchmark: Any, impl: str, take: Callable[[], Awaitable[Any]], loop: asyncio.AbstractEventLoop,
                 redis_server: Any, figures: dict[str, float]) -> None:
    benchmark.group = "resp-evalsha"
    wall: list[float] = []

    async def calls() -> int:
        started = time.perf_counter()
        admitted = 0
        for _ in range(N):
            admitted += (await take())[0] == 0
        wall.append(time.perf_counter() - started)
        return admitted

    redis_cpu = _process_cpu(redis_server.proc.pid)
    assert benchmark.pedantic(lambda: loop.run_until_complete(calls()), rounds=10, warmup_rounds=1) == N
    _record(benchmark, figures, f"evalsha {impl}", wall[1:], _process_cpu(redis_server.proc.pid) - redis_cpu)


@pytest.mark.benchmark(timer=time.thread_time)
def test_evalsha_concurrent(benchmark: Any, impl: str, take: Callable[[], Awaitable[Any]],
                            loop: asyncio.AbstractEventLoop, redis_server: Any, figures: dict[str, float]) -> None:
    benchmark.group = "resp-evalsha-concurrent"
    wall: list[float] = []

    async def calls() -> int:
        started = time.perf_counter()
        admitted = 0
        for _ in range(N // CONCURRENT):
            admitted += sum(r[0] == 0 for r in await asyncio.gather(*(take() for _ in range(CONCURRENT))))
        wall.append(time.perf_counter() - started)
        return admitted

    redis_cpu = _process_cpu(redis_server.proc.pid)
    assert benchmark.pedantic(lambda: loop.run_until_complete(calls()), rounds=10, warmup_rounds=1) == N
    _record(benchmark, figures, f"evalsha-100 {impl}", wall[1:], _process_cpu(redis_server.proc.pid) - redis_cpu)


def _summary(f: dict[str, float]) -> list[str]:
    lines = ["", ("EVALSHA of TAKE_LUA, µs per call of the event loop's CPU (medians; wall and redis-server's "
                  "CPU in brackets; floor: the same calls answered at once by a coroutine, no Redis):")]
    for name, how in (("evalsha", "one at a time"), ("evalsha-100", "100 at a time")):
        parts = []
        for impl in IMPLS:
            key = f"{name} {impl}"
            if key in f:
                parts.append(f"{impl} {f[key]:6.2f}" + ("" if impl == "floor" else
                                                        f" (wall {f[key + ' wall']:.1f}, redis {f[key + ' redis']:.1f})"))
        lines.append(f"  {how:<14} " + ", ".join(parts))
        resp, py, floor = f.get(f"{name} resp"), f.get(f"{name} redis-py"), f.get(f"{name} floor", 0.0)
        if resp and py:
            net = f", above the floor {(py - floor) / (resp - floor):.1f}x" if floor and resp > floor else ""
            lines.append(f"  {'':<14} redis-py / resp = {py / resp:.1f}x{net}")
    return lines
