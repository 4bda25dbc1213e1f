"""The rate-limit and budget counters per kind: what one request pays, ``admit`` then ``settle``.

    pytest benchmarks/test_bench_limiter.py -q --benchmark-group-by=group,param:impl

Each round is 1,000 requests on one uvloop event loop made once for the module
(``run_until_complete`` once per round), so the figures read as **ms per round
= µs per request** (one admit and one settle, every limit set: requests and
tokens per minute and a monthly budget, never reached).

- ``limiter-admit-settle``: one request after the other — the latency one
  request adds (memory: in-process dicts; shm: what ``[storage] kind =
  "sqlite"`` counts in, a memory-mapped file under a file lock; redis: one Lua
  script round trip, twice).
- ``limiter-admit-settle-concurrent``: the same 1,000 requests 100 at a time
  (``asyncio.gather``), as a busy worker makes them: Redis has 100 scripts in
  flight.

The shared-memory file is under the test's tmp directory; Redis a real
``redis-server`` in its own process on this machine (skipped when there is none).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastroute.governance.limiter import Counters, Limiter, Limits

N = 1000
LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, budget_usd=10**6, budget_period="month")


@pytest.fixture(params=["memory", "shm", "redis"])
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def limiter(counters: Counters) -> Limiter:
    """On ``conftest.py``'s counters of the ``impl`` kind."""
    return Limiter(counters)


async def _request(limiter: Limiter) -> bool:
    verdict = await limiter.admit("bench-key", LIMITS)
    await limiter.settle("bench-key", LIMITS, 250, 1_500)
    return verdict.admitted


def test_admit_settle(benchmark: Any, limiter: Limiter, impl: str, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "limiter-admit-settle"

    async def requests() -> int:
        admitted = 0
        for _ in range(N):
            admitted += await _request(limiter)
        return admitted

    rounds = 30 if impl == "memory" else 10
    assert benchmark.pedantic(lambda: loop.run_until_complete(requests()), rounds=rounds, warmup_rounds=1) == N


def test_admit_settle_concurrent(benchmark: Any, limiter: Limiter, impl: str,
                                 loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "limiter-admit-settle-concurrent"

    async def requests() -> int:
        admitted = 0
        for _ in range(N // 100):
            admitted += sum(await asyncio.gather(*(_request(limiter) for _ in range(100))))
        return admitted

    rounds = 30 if impl == "memory" else 10
    assert benchmark.pedantic(lambda: loop.run_until_complete(requests()), rounds=rounds, warmup_rounds=1) == N
