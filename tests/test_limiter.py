"""Rate limits and budgets on real parts: every kind of counters through the one Limiter — memory,
a real memory-mapped file (``ShmCounters``; its own tests: ``tests/test_shm_counters.py``) and a
real redis-server with a password (shared by two processes; killed mid-test and restarted) — with
the clock injected (``now``)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fastroute.governance.counters import _Batch
from fastroute.governance.limiter import (
    Counters,
    Limiter,
    Limits,
    MemoryCounters,
    RedisCounters,
    Verdict,
    period_of,
    window_wait_ms,
)
from fastroute.governance.shm_counters import ShmCounters
from tests.redis_server import PASSWORD, RedisServer, redis_url

# the module stays light to import: the two-process tests import it again in each child (spawn)
KINDS = ["memory", "shm", "redis"]
PASSWORD_ENV = "FR_TEST_LIMITER_REDIS_PASSWORD"
ROOT = Path(__file__).resolve().parent.parent


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def at(*parts: int) -> float:
    """UNIX seconds of a UTC time: at(2030, 1, 15, 12, 0, 15)."""
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def free_port() -> int:
    from tests.conftest import free_port

    return free_port()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_counters(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Callable[[], Counters]:
    """Builds counters of one kind: each call another worker of the same deployment."""
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        prefix = f"test-{uuid.uuid4().hex[:8]}:"  # each test its own keys on the shared server
        return lambda: RedisCounters(redis_url(server.port), PASSWORD_ENV, prefix)
    if kind == "shm":
        return lambda: ShmCounters(tmp_path / "limits.shm")
    return MemoryCounters


async def admits(limiter: Limiter, name: str, limits: Limits, now: float, n: int) -> list[bool]:
    return [bool(await limiter.admit(name, limits, now)) for _ in range(n)]


# ── each limit, on every kind ─────────────────────────────────────────────

def test_requests_per_minute(new_counters: Callable[[], Counters]) -> None:
    rpm = Limits(requests_per_minute=10)
    t = at(2030, 1, 15, 12, 0, 15)

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            assert await admits(limiter, "k", rpm, t, 10) == [True] * 10
            assert await limiter.admit("k", rpm, t) == Verdict(False, "requests_per_minute", 45)
            assert await limiter.admit("k", rpm, t + 44.5) == Verdict(False, "requests_per_minute", 1)
            assert await limiter.admit("other", rpm, t)  # per key
            # 12:01:00: the previous minute's 10 weigh 59,999/60,000: one passes, then one every 6 s
            assert await limiter.admit("k", rpm, t + 45)
            assert await limiter.admit("k", rpm, t + 45) == Verdict(False, "requests_per_minute", 6)
            assert not await limiter.admit("k", rpm, t + 50.999)
            assert await limiter.admit("k", rpm, t + 51)
            assert await limiter.admit("k", rpm, t + 51) == Verdict(False, "requests_per_minute", 6)
            # two minutes on, nothing weighs any more
            assert await admits(limiter, "k", rpm, t + 165, 11) == [True] * 10 + [False]
    run(scenario())


def test_tokens_per_minute(new_counters: Callable[[], Counters]) -> None:
    tpm = Limits(tokens_per_minute=1000)
    t = at(2030, 1, 15, 12, 0, 15)

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            assert await limiter.admit("k", tpm, t)
            await limiter.settle("k", tpm, 999, 0, t)
            assert await limiter.admit("k", tpm, t)  # 999 < 1000: the request that crosses is not cut
            await limiter.settle("k", tpm, 101, 0, t)
            # 1,100 tokens this minute: in the next one they weigh below 1,000 after 5.455 s
            assert await limiter.admit("k", tpm, t) == Verdict(False, "tokens_per_minute", 51)
            assert not await limiter.admit("k", tpm, t + 50)
            assert await limiter.admit("k", tpm, t + 51)
    run(scenario())


BUDGET_CASES = [
    # period, spent at, still refused at (retry_after_s), admitted again at
    ("day", at(2030, 1, 15, 0, 0, 0), at(2030, 1, 15, 23, 0, 0), 3600, at(2030, 1, 16)),
    ("day", at(2030, 1, 15, 12), at(2030, 1, 15, 23, 59, 59, 500_000), 1, at(2030, 1, 16)),
    ("week", at(2030, 1, 14, 0, 0, 0), at(2030, 1, 20, 23, 0, 0), 3600, at(2030, 1, 21)),  # Monday to Monday
    ("week", at(2030, 1, 1, 9), at(2030, 1, 5, 0, 0, 0), 2 * 86400, at(2030, 1, 7)),  # a week across the new year
    ("month", at(2028, 2, 1), at(2028, 2, 29, 23, 59, 59), 1, at(2028, 3, 1)),  # a leap year's February
    ("month", at(2029, 12, 10), at(2029, 12, 31, 12), 12 * 3600, at(2030, 1, 1)),
]


@pytest.mark.parametrize(("period", "spent_at", "refused_at", "retry", "next_at"), BUDGET_CASES)
def test_budget_periods_roll_over_in_utc(new_counters: Callable[[], Counters], period: Any, spent_at: float,
                                         refused_at: float, retry: int, next_at: float) -> None:
    budget = Limits(budget_usd=0.01, budget_period=period)  # 10,000 micro-dollars

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            assert await limiter.admit("k", budget, spent_at)
            await limiter.settle("k", budget, 50, 6_000, spent_at)
            assert await limiter.admit("k", budget, spent_at)
            await limiter.settle("k", budget, 50, 4_000, spent_at)
            end_s = period_of(period, int(spent_at * 1000))[1] // 1000
            assert await limiter.admit("k", budget, spent_at) == Verdict(False, "budget_usd", int(end_s - spent_at))
            assert await limiter.admit("k", budget, refused_at) == Verdict(False, "budget_usd", retry)
            assert await limiter.admit("k", budget, next_at - 0.001) == Verdict(False, "budget_usd", 1)
            assert await limiter.admit("k", budget, next_at)
    run(scenario())


def test_budget_total_never_resets_and_counts_every_micro(new_counters: Callable[[], Counters]) -> None:
    total = Limits(budget_usd=1.0, budget_period="total")

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            t = at(2030, 1, 15)
            assert await limiter.admit("k", total, t)
            await limiter.settle("k", total, 0, 999_999, t)
            assert await limiter.admit("k", total, at(2031, 6, 1))
            await limiter.settle("k", total, 0, 1, at(2031, 6, 1))
            for later in (at(2031, 6, 1), at(2040, 1, 1)):
                assert await limiter.admit("k", total, later) == Verdict(False, "budget_usd", None)
    run(scenario())


def test_the_longest_refusal_is_the_one_named(new_counters: Callable[[], Counters]) -> None:
    both = Limits(requests_per_minute=1, budget_usd=0.000001, budget_period="day")
    t = at(2030, 1, 15, 18, 0, 30)

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            assert await limiter.admit("k", both, t)
            await limiter.settle("k", both, 10, 1, t)
            assert await limiter.admit("k", both, t) == Verdict(False, "budget_usd", 6 * 3600 - 30)
            rpm_only = Limits(requests_per_minute=1)
            assert await limiter.admit("k", rpm_only, t) == Verdict(False, "requests_per_minute", 30)
    run(scenario())


def test_concurrent_admits_pass_exactly_the_limit(kind: str, new_counters: Callable[[], Counters]) -> None:
    rpm = Limits(requests_per_minute=10, budget_usd=5.0)
    t = at(2030, 1, 15, 12, 0, 15)

    async def scenario() -> None:
        async with new_counters() as a, new_counters() as b:
            one, two = Limiter(a), Limiter(b)
            verdicts = await asyncio.gather(*(one.admit("k", rpm, t) for _ in range(50)))
            assert sum(map(bool, verdicts)) == 10
            assert {v.limit for v in verdicts if not v} == {"requests_per_minute"}
            # two workers of one deployment: shared kinds pass 10 between them, memory 10 each
            verdicts = await asyncio.gather(*(w.admit("k2", rpm, t) for _ in range(25) for w in (one, two)))
            assert sum(map(bool, verdicts)) == (20 if kind == "memory" else 10)
    run(scenario())


def test_settle_counts_only_what_a_limit_uses(new_counters: Callable[[], Counters]) -> None:
    t = at(2030, 1, 15, 12)

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            await limiter.settle("k", Limits(requests_per_minute=5), 10**6, 10**9, t)  # neither is limited
            assert await limiter.admit("k", Limits(tokens_per_minute=1000, budget_usd=1.0), t)
            unlimited = Limits()
            for _ in range(3):
                assert await limiter.admit("free", unlimited, t)
            await limiter.settle("free", unlimited, 10, 10, t)
            with pytest.raises(ValueError, match="0 or more"):
                await limiter.settle("k", Limits(budget_usd=1.0), 1, -1, t)
    run(scenario())


def test_settle_soon_needs_no_task_per_request_and_drained_counts_them_all(
        kind: str, new_counters: Callable[[], Counters]) -> None:
    """The request path settles without waiting: memory and shm at once, Redis with the client's
    next write — never a task per request; ``drained()`` waits for all."""
    t = at(2030, 1, 15, 12, 0, 5)
    limits = Limits(tokens_per_minute=1000, budget_usd=1.0, budget_period="day")

    async def scenario() -> None:
        async with new_counters() as counters:
            limiter = Limiter(counters)
            before = len(asyncio.all_tasks())
            for _ in range(100):
                limiter.settle_soon("k", limits, 9, 10_000, t)
            assert len(asyncio.all_tasks()) - before <= (1 if kind == "redis" else 0)
            await counters.drained()
            # 900 tokens this minute: 100 more reach the limit; 1,000,000 micro-dollars: the budget is spent
            verdict = await limiter.admit("k", limits, t)
            assert verdict == Verdict(False, "budget_usd", int(at(2030, 1, 16) - t))
            assert await limiter.admit("k", Limits(tokens_per_minute=901), t)
            assert not await limiter.admit("k", Limits(tokens_per_minute=900), t)
            peeked = await limiter.peek("k", limits, t)
            assert peeked[4] == 900 and peeked[5] == 1_000_000
    run(scenario())


def test_an_unlimited_key_never_touches_the_counters() -> None:
    class Refuses(MemoryCounters):
        async def take(self, *args: Any) -> Any:
            raise AssertionError("touched")

        async def add(self, *args: Any) -> None:
            raise AssertionError("touched")

    async def scenario() -> None:
        limiter = Limiter(Refuses())
        assert await limiter.admit("k", Limits()) is not None
        await limiter.settle("k", Limits(), 100, 100)
        await limiter.settle("k", Limits(requests_per_minute=3), 100, 100)
    run(scenario())


# ── two processes, one shared Redis (shm: tests/test_shm_counters.py) ─────────

def _admit_in_child(where: str, prefix: str, now: float, barrier: Any, out: Any) -> None:
    async def main() -> int:
        async with RedisCounters(where, PASSWORD_ENV, prefix) as counters:
            limiter = Limiter(counters)
            limits = Limits(requests_per_minute=150, budget_usd=100.0)
            await asyncio.to_thread(barrier.wait)
            passed = 0
            for _ in range(20):
                verdicts = await asyncio.gather(*(limiter.admit("shared", limits, now) for _ in range(10)))
                passed += sum(map(bool, verdicts))
            assert not counters.degraded, "counted locally: the backend refused"
            return passed

    try:
        out.put(run(main()))
    except BaseException as exc:  # said to the parent at once, not by its timeout
        out.put(f"{type(exc).__name__}: {exc}")
        raise


def test_two_processes_admit_exactly_the_limit_between_them(redis_server: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    where = redis_url(redis_server.port)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)  # the children inherit it
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    prefix = f"two-{uuid.uuid4().hex[:8]}:"
    children = [ctx.Process(target=_admit_in_child, args=(where, prefix, at(2030, 1, 15, 12, 0, 1), barrier,
                                                          out)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        passed = [out.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0, 0]
    assert sum(passed) == 150, passed  # 400 tried, 200 each


# ── redis ─────────────────────────────────────────────────────────────────

def test_redis_keys_their_expiry_and_no_password_shown(redis_server: Any, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import redis.asyncio as redis

    caplog.set_level(logging.WARNING, logger="fastroute.governance")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = redis_url(redis_server.port)
    t = at(2030, 1, 15, 23, 0, 15)
    minute = int(t) // 60
    limits = Limits(requests_per_minute=10, tokens_per_minute=10_000, budget_usd=1.0, budget_period="day")

    async def scenario() -> None:
        raw = redis.from_url(url, password=PASSWORD)
        async with RedisCounters(url, PASSWORD_ENV, "keys-test:") as counters:
            assert PASSWORD not in counters.where and PASSWORD not in repr(counters)
            limiter = Limiter(counters)
            assert await limiter.admit("team-a", limits, t)
            await limiter.settle("team-a", limits, 321, 4_567, t)
            assert await raw.hgetall(f"keys-test:lim:{{team-a}}:m:{minute}") == {b"r": b"1", b"t": b"321"}
            assert await raw.get("keys-test:lim:{team-a}:s:day:2030-01-15") == b"4567"
            # the minute's hash lives to the end of the next minute (+60 s), the day's spend to midnight (+1 h)
            assert 160_000 < await raw.pttl(f"keys-test:lim:{{team-a}}:m:{minute}") <= 165_000
            assert 7_180_000 < await raw.pttl("keys-test:lim:{team-a}:s:day:2030-01-15") <= 7_185_000
            total = Limits(budget_usd=1.0, budget_period="total")
            await limiter.settle("team-a", total, 0, 1, t)
            assert await raw.pttl("keys-test:lim:{team-a}:s:total") == -1  # never expires
        monkeypatch.setenv("FR_TEST_LIMITER_WRONG_PASSWORD", PASSWORD + "-wrong")
        async with RedisCounters(url, "FR_TEST_LIMITER_WRONG_PASSWORD", "keys-test:") as wrong:  # refused: local
            assert await Limiter(wrong).admit("team-a", limits, t)
            assert wrong.degraded
        await raw.aclose()

    run(scenario())
    assert caplog.text.count(f"limits: cannot reach {url} (WRONGPASS") == 1
    assert PASSWORD not in caplog.text


def test_redis_adds_ride_with_the_next_take_and_survive_a_script_flush(redis_server: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """settle_soon's add is not written alone: it goes with the next admit's script, in the same
    write; after SCRIPT FLUSH (Redis restarted) the add answered NOSCRIPT is loaded, sent again and
    counted once; drained() waits for adds still lingering."""
    import redis.asyncio as redis

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = redis_url(redis_server.port)
    t = at(2030, 1, 16, 9, 0, 15)
    minute = int(t) // 60
    limits = Limits(requests_per_minute=100, tokens_per_minute=10_000, budget_usd=1.0, budget_period="day")

    async def scenario() -> None:
        raw = redis.from_url(url, password=PASSWORD)
        async with RedisCounters(url, PASSWORD_ENV, "ride-test:") as counters:
            limiter = Limiter(counters)
            writes: list[bytes] = []
            assert await limiter.admit("k", limits, t)
            limiter.settle_soon("k", limits, 0, 0, t)  # nothing to count: nothing sent
            assert counters._adding == 0
            transport = counters._client._conn.transport
            monkeypatch.setattr(counters._client._conn, "transport", _Spy(transport, writes))
            limiter.settle_soon("k", limits, 40, 700, t)
            assert writes == []  # lingering
            assert await limiter.admit("k", limits, t)
            # the add, then the take, in one write; the add's script was never loaded (NOSCRIPT):
            # loaded and sent again, alone
            assert writes[0].count(b"EVALSHA") == 2 and writes[0].index(b"\r\n40\r\n") < writes[0].index(b"EVALSHA", 9)
            await counters.drained()
            assert await raw.hgetall(f"ride-test:lim:{{k}}:m:{minute}") == {b"r": b"2", b"t": b"40"}
            del writes[:]
            limiter.settle_soon("k", limits, 1, 0, t)
            assert await limiter.admit("k", limits, t)
            assert len(writes) == 1 and writes[0].count(b"EVALSHA") == 2  # loaded now: one write for both
            assert await raw.hgetall(f"ride-test:lim:{{k}}:m:{minute}") == {b"r": b"3", b"t": b"41"}
            await raw.script_flush()
            limiter.settle_soon("k", limits, 2, 300, t)
            await counters.drained()
            assert await raw.hget(f"ride-test:lim:{{k}}:m:{minute}", "t") == b"43"
            assert await raw.get("ride-test:lim:{k}:s:day:2030-01-16") == b"1000"
            assert not counters.degraded
        await raw.aclose()

    run(scenario())


class _Spy:
    """A transport whose writes are kept (then written)."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def test_redis_merge_of_one_batch_counts_once(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer to a merge was lost and it is sent again: its marker makes the second a no-op."""
    import redis.asyncio as redis

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    url = redis_url(redis_server.port)
    t = at(2030, 1, 15, 12, 0, 15)
    minute = int(t) // 60

    async def scenario() -> None:
        async with RedisCounters(url, PASSWORD_ENV, "merge-test:") as counters:
            batch = _Batch({("k", minute): [3, 70], ("k", minute - 5): [9, 9]},
                           {("k", "month:2030-01"): [500, int(at(2030, 2, 1) * 1000)]})
            assert await counters._merge(batch, int(t * 1000)) == 1  # the minute 5 minutes back: dropped
            assert await counters._merge(batch, int(t * 1000)) == 1
        raw = redis.from_url(url, password=PASSWORD)
        assert await raw.hgetall(f"merge-test:lim:{{k}}:m:{minute}") == {b"r": b"3", b"t": b"70"}
        assert await raw.get("merge-test:lim:{k}:s:month:2030-01") == b"500"
        assert not await raw.exists(f"merge-test:lim:{{k}}:m:{minute - 5}")
        await raw.aclose()
    run(scenario())


def test_redis_down_then_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    """Killed mid-test: admits go on here from the counts last seen; restarted: what was counted here
    meanwhile is added — the current and previous minute and periods not ended, nothing older."""
    import redis.asyncio as redis

    caplog.set_level(logging.WARNING, logger="fastroute.governance")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    port = free_port()
    url = redis_url(port)
    server = RedisServer(port, PASSWORD, aof_dir=tmp_path)
    t0 = at(2030, 1, 15, 23, 58, 10)
    m0 = int(t0) // 60
    kept = Limits(requests_per_minute=100, budget_usd=2.0, budget_period="month")
    gone = Limits(budget_usd=1.0, budget_period="day")

    async def pay(limiter: Limiter, name: str, limits: Limits, now: float, n: int, micros: int) -> None:
        for _ in range(n):
            assert await limiter.admit(name, limits, now)
            await limiter.settle(name, limits, 0, micros, now)

    async def scenario() -> None:
        nonlocal server
        async with RedisCounters(url, PASSWORD_ENV, "down:") as counters:
            counters.retry_first_s = 0.1
            limiter = Limiter(counters)
            await pay(limiter, "kept", kept, t0, 5, 100_000)
            await pay(limiter, "gone", gone, t0, 1, 100_000)
            server.kill()
            started = time.monotonic()
            await pay(limiter, "kept", kept, t0 + 1, 3, 100_000)
            assert counters.degraded and time.monotonic() - started < 2  # no wait on a dead server
            # the window goes on from what it last saw too: 5 there + 3 here reach a limit of 8 (not counted)
            refused = await limiter.admit("kept", Limits(requests_per_minute=8), t0 + 1)
            assert not refused and refused.limit == "requests_per_minute"
            await pay(limiter, "gone", gone, t0 + 1, 1, 200_000)
            await pay(limiter, "kept", kept, t0 + 60, 4, 100_000)
            # what it last saw (500,000) plus what it spent here (700,000): a budget of 1.2 is spent
            assert await limiter.admit("kept", Limits(budget_usd=1.2), t0 + 60) == Verdict(
                False, "budget_usd", int(at(2030, 2, 1) - t0 - 60))
            await pay(limiter, "kept", kept, t0 + 120, 1, 100_000)  # 00:00:10 on the 16th: newest time seen
            assert caplog.text.count("limits: cannot reach") == 1, caplog.text
            server = RedisServer(port, PASSWORD, aof_dir=tmp_path)  # back, with what it had (its append-only file)
            deadline = time.monotonic() + 30
            while counters.degraded:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.05)
            assert await limiter.admit("kept", Limits(budget_usd=1.3), t0 + 120) == Verdict(
                False, "budget_usd", int(at(2030, 2, 1) - t0 - 120))
            assert await limiter.admit("kept", Limits(budget_usd=1.300001), t0 + 120)
        raw = redis.from_url(url, password=PASSWORD)
        try:
            minutes = {m: await raw.hgetall(f"down:lim:{{kept}}:m:{m}") for m in (m0, m0 + 1, m0 + 2)}
            assert minutes == {m0: {b"r": b"5"},  # the 3 made here in 23:58 are dropped: no window reads it
                               m0 + 1: {b"r": b"4"}, m0 + 2: {b"r": b"2"}}  # 1 made here, 1 after
            assert await raw.get("down:lim:{kept}:s:month:2030-01") == b"1300000"  # 500,000 + 800,000 made here
            assert await raw.get("down:lim:{gone}:s:day:2030-01-15") == b"100000"  # the day ended: dropped
        finally:
            await raw.aclose()

    try:
        run(scenario())
    finally:
        server.kill()
    assert caplog.text.count(f"limits: cannot reach {url} (RespUnavailable") == 1
    assert caplog.text.count(f"limits: {url} is back; added what this process counted meanwhile: 2 minute(s) and "
                             "1 period(s) of 1 key(s); 3 minute(s) or period(s) that had ended dropped") == 1
    assert PASSWORD not in caplog.text


def test_redis_away_from_the_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.governance")
    url = redis_url(free_port())  # nothing listens there

    async def scenario() -> None:
        async with RedisCounters(url, None, "never:") as counters:
            limiter = Limiter(counters)
            verdicts = await asyncio.gather(*(limiter.admit("k", Limits(requests_per_minute=3)) for _ in range(5)))
            assert sum(map(bool, verdicts)) == 3
            assert counters.degraded
    run(scenario())
    assert caplog.text.count("limits: cannot reach") == 1
    assert "closing with counts made in this process not added" in caplog.text


def test_redis_that_never_answers_is_given_up_after_timeout_s(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that takes the connection and never answers: the request waits timeout_s once, then is
    admitted from the local counts, and so are the next ones (no wait: the probe looks meanwhile)."""
    caplog.set_level(logging.WARNING, logger="fastroute.governance")

    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads what comes, answers nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = redis_url(server.sockets[0].getsockname()[1])
        try:
            async with RedisCounters(url, None, "silent:", timeout_s=1.0) as counters:
                limiter = Limiter(counters)
                started = time.monotonic()
                assert await limiter.admit("k", Limits(requests_per_minute=2))
                assert time.monotonic() - started >= 0.95  # it waited timeout_s
                assert counters.degraded
                started = time.monotonic()
                assert await limiter.admit("k", Limits(requests_per_minute=2))
                assert not await limiter.admit("k", Limits(requests_per_minute=2))  # the local count: 2 of 2
                assert time.monotonic() - started < 0.9  # no second wait of timeout_s
        finally:
            server.close()
    run(scenario())
    assert caplog.text.count("limits: cannot reach") == 1
    assert "RespTimeout" in caplog.text


# ── the parts ─────────────────────────────────────────────────────────────

def test_periods_in_utc() -> None:
    def ms(*parts: int) -> int:
        return int(at(*parts) * 1000)

    assert period_of("day", ms(2030, 1, 15, 23, 59)) == (ms(2030, 1, 15), ms(2030, 1, 16), "day:2030-01-15")
    assert period_of("week", ms(2030, 1, 13, 23)) == (ms(2030, 1, 7), ms(2030, 1, 14), "week:2030-01-07")  # a Sunday
    assert period_of("week", ms(2030, 1, 14)) == (ms(2030, 1, 14), ms(2030, 1, 21), "week:2030-01-14")  # a Monday
    assert period_of("month", ms(2028, 2, 29, 12)) == (ms(2028, 2, 1), ms(2028, 3, 1), "month:2028-02")
    assert period_of("month", ms(2029, 12, 31, 23)) == (ms(2029, 12, 1), ms(2030, 1, 1), "month:2029-12")
    assert period_of("total", ms(2029, 12, 31)) == (0, 0, "total")


def test_window_wait_matches_the_rule() -> None:
    """The wait each refusal announces is the first ms the same counts would be admitted."""
    from fastroute.governance.counters import exceeds

    for limit, elapsed, prev, cur in [(10, 15_000, 0, 10), (10, 0, 10, 1), (1000, 15_000, 0, 1100), (7, 59_999, 3, 7),
                                      (10, 30_000, 25, 0), (3, 1, 10**6, 0), (5, 0, 0, 10**6)]:
        assert exceeds(elapsed, limit, -1, -1, prev, cur, 0, 0, 0)
        wait = window_wait_ms(limit, elapsed, prev, cur)
        assert wait is not None and wait > 0
        t = elapsed + wait
        counts = (prev, cur) if t < 60_000 else ((cur, 0) if t < 120_000 else (0, 0))
        assert not exceeds(t % 60_000, limit, -1, -1, *counts, 0, 0, 0), (limit, elapsed, prev, cur, wait)
        t -= 1
        counts = (prev, cur) if t < 60_000 else ((cur, 0) if t < 120_000 else (0, 0))
        assert exceeds(t % 60_000, limit, -1, -1, *counts, 0, 0, 0), (limit, elapsed, prev, cur, wait)
    assert window_wait_ms(0, 0, 0, 0) is None


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"requests_per_minute": -1}, "requests_per_minute: must be a whole number, 0 or more, got -1"),
    ({"tokens_per_minute": 1.5}, "tokens_per_minute: must be a whole number"),
    ({"requests_per_minute": True}, "requests_per_minute: must be a whole number"),
    ({"budget_usd": -0.01}, "budget_usd: must be a number of dollars, 0 or more"),
    ({"budget_usd": float("nan")}, "budget_usd: must be a number"),
    ({"budget_period": "year"}, "budget_period: must be one of day, week, month, total, got 'year'"),
])
def test_limits_are_checked_when_built(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        Limits(**kwargs)
    assert Limits(budget_usd=12.345678).budget_micros == 12_345_678
    assert Limits(requests_per_minute=0).budget_micros is None


def test_a_limit_of_zero_refuses_for_good() -> None:
    async def scenario() -> None:
        limiter = Limiter(MemoryCounters())
        assert await limiter.admit("k", Limits(requests_per_minute=0)) == Verdict(False, "requests_per_minute", None)
        assert await limiter.admit("k", Limits(budget_usd=0, budget_period="day"), at(2030, 1, 15, 12)) == Verdict(
            False, "budget_usd", 12 * 3600)
    run(scenario())


def test_importing_the_limiter_is_light() -> None:
    code = ("import sys, fastroute.governance.limiter;"
            "print(','.join(m for m in ('redis', 'sqlite3', 'fastroute.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == ""


def test_memory_admit_and_settle_take_microseconds() -> None:
    """The request path's cost with the memory kind (the benchmark has the figures): well under 50 µs."""
    limits = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, budget_usd=10**6)

    async def scenario() -> float:
        limiter = Limiter(MemoryCounters())
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            await limiter.admit("k", limits)
            await limiter.settle("k", limits, 100, 10)
        return (time.perf_counter() - start) / n

    assert run(scenario()) < 50e-6
