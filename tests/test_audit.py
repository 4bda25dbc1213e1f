"""The audit log: every kind through the one interface (memory, SQLite, and Redis on a real
redis-server with a password: tests/test_audit_redis.py has its own behaviour), and the SQLite
one on real files — written by two processes at once, surviving a close, purged by retention,
bounded while its file is locked, and queried from indexes (``EXPLAIN QUERY PLAN``).

Time bounds are half-open: ``since`` inclusive, ``until`` exclusive; ``purge(t)`` removes
``timestamp < t``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fastroute.audit
import fastroute.audit.sqlite as audit_sqlite
from fastroute.audit import MAX_LIMIT, AuditLog, AuditRecord, MemoryAuditLog
from fastroute.audit.record import ERROR_LIMIT, NAME_LIMIT
from fastroute.audit.sqlite import (
    DAY_MS,
    HOUR_MS,
    MIGRATIONS,
    SqliteAuditLog,
    logs_query,
    usage_query,
)
from fastroute.storage import StorageError, StorageUnavailable
from tests.conftest import ROOT
from tests.redis_server import PASSWORD, redis_url

KINDS = ["memory", "sqlite", "redis"]
#: the env var the Redis logs of these tests read their password from
PASSWORD_ENV = "FR_TEST_AUDIT_REDIS_PASSWORD"
#: 2024-03-09 00:00:00 UTC, ms
T0 = 1_709_942_400_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rec(i: int, ts: int | None = None, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {"key_name": "team-a", "model": "gpt-4o", "provider": "openai", "sent_model": "gpt-4o",
                            "prompt_tokens": 10, "completion_tokens": 5, "cost_micros": 100, "latency_ms": 12.5}
    base.update(fields)
    return AuditRecord(f"req-{i}", T0 + i if ts is None else ts, **base)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_log(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., AuditLog]:
    """Builds logs of one kind; the SQLite ones all on the same file, the Redis ones all under the
    test's own prefix of the module's redis-server (another worker or instance, or a restart)."""
    if kind == "redis":
        from fastroute.audit.redis import RedisAuditLog

        url = redis_url(request.getfixturevalue("redis_server").port)
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        prefix = f"test-{uuid.uuid4().hex[:12]}:"

    def make(**kw: Any) -> AuditLog:
        if kind == "sqlite":
            return SqliteAuditLog(tmp_path / "audit.sqlite3", **kw)
        if kind == "redis":
            return RedisAuditLog(url, PASSWORD_ENV, prefix, **kw)
        return MemoryAuditLog(**kw)
    return make


def count_rows(path: Path, table: str = "audit") -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def ids(records: list[AuditRecord]) -> list[str]:
    return [r.request_id for r in records]


# ── both kinds, one interface ──────────────────────────────────────────────

def test_a_record_comes_back_as_it_was_recorded(new_log: Callable[..., AuditLog]) -> None:
    full = AuditRecord("req-full", T0, "team-a", "sess-1", "claude-sonnet", "anthropic", "claude-sonnet-4-5", 1200,
                       340, 1000, 4567, 812.25, 95.5, 200, None, True, True)
    failed = AuditRecord("req-failed", T0 + 1, None, None, "nope", None, None, status=400, error="no provider")

    async def scenario() -> None:
        async with new_log() as log:
            log.record(full)
            log.record(failed)
            await log.flush()
            assert await log.logs() == [failed, full]
            got = (await log.logs(key="team-a"))[0]
            assert type(got.stream) is bool and type(got.estimated) is bool and type(got.timestamp) is int
    run(scenario())


def test_logs_are_newest_first_ties_in_the_order_recorded(new_log: Callable[..., AuditLog]) -> None:
    order = list(range(50))
    random.Random(1).shuffle(order)

    async def scenario() -> None:
        async with new_log() as log:
            for i in order:  # recorded out of order: a long request finishes after a short later one
                log.record(rec(i, ts=T0 + i * 1000))
            log.record(rec(100, ts=T0 + 7000))  # the same ms as req-7, recorded after it
            await log.flush()
            got = ids(await log.logs(limit=1000))
            assert got == [f"req-{i}" for i in range(49, 7, -1)] + ["req-100", "req-7"] + \
                [f"req-{i}" for i in range(6, -1, -1)]
    run(scenario())


def test_logs_filter_by_key_model_session(new_log: Callable[..., AuditLog]) -> None:
    async def scenario() -> None:
        async with new_log() as log:
            for i in range(60):
                log.record(rec(i, key_name=f"k{i % 3}", model=f"m{i % 4}", session=f"s{i % 5}" if i % 2 else None))
            await log.flush()
            assert ids(await log.logs(key="k1")) == [f"req-{i}" for i in range(59, -1, -1) if i % 3 == 1]
            assert ids(await log.logs(model="m2")) == [f"req-{i}" for i in range(59, -1, -1) if i % 4 == 2]
            assert ids(await log.logs(session="s3")) == [f"req-{i}" for i in range(59, -1, -1)
                                                         if i % 2 and i % 5 == 3]
            assert ids(await log.logs(key="k0", model="m0")) == [f"req-{i}" for i in range(59, -1, -1) if i % 12 == 0]
            assert await log.logs(key="nobody") == [] and await log.logs(model="k1") == []
    run(scenario())


def test_logs_limit_is_capped(new_log: Callable[..., AuditLog]) -> None:
    async def scenario() -> None:
        async with new_log() as log:
            for i in range(MAX_LIMIT + 200):
                log.record(rec(i))
            await log.flush()
            assert ids(await log.logs(limit=3)) == ["req-1199", "req-1198", "req-1197"]
            assert len(await log.logs()) == 100  # the default
            capped = await log.logs(limit=5000)
            assert len(capped) == MAX_LIMIT and capped[-1].request_id == "req-200"
            assert await log.logs(limit=0) == [] and await log.logs(limit=-5) == []
    run(scenario())


def test_since_is_inclusive_until_exclusive(new_log: Callable[..., AuditLog]) -> None:
    async def scenario() -> None:
        async with new_log() as log:
            for i in range(10):
                log.record(rec(i))  # at T0 + i
            await log.flush()
            assert ids(await log.logs(since=T0 + 3, until=T0 + 6)) == ["req-5", "req-4", "req-3"]
            assert ids(await log.logs(since=T0 + 8)) == ["req-9", "req-8"]
            assert ids(await log.logs(until=T0 + 2)) == ["req-1", "req-0"]
            assert await log.logs(since=T0 + 5, until=T0 + 5) == []
            assert ids(await log.logs(key="team-a", since=T0 + 4, until=T0 + 5)) == ["req-4"]
            assert (await log.usage(since=T0 + 3, until=T0 + 6))[0]["requests"] == 3
    run(scenario())


#: (ts offset, key, model, session, prompt, completion, cached, cost) — two UTC days
USAGE_DATA = [
    (0, "alice", "gpt-4o", "s1", 100, 10, 50, 1000),
    (5 * HOUR_MS, "alice", "claude", "s1", 200, 20, 0, 3000),
    (DAY_MS - 1, "bob", "gpt-4o", None, 300, 30, 100, 500),
    (DAY_MS, "bob", "gpt-4o", "s2", 400, 40, 0, 700),
    (DAY_MS + 3 * HOUR_MS + 17, None, "llama", None, 50, 5, 0, None),  # no key (an open router), no price
    (DAY_MS + 20 * HOUR_MS, "alice", "gpt-4o", "s2", 1, 1, 1, 1),
]


def usage_log_of(log: AuditLog) -> None:
    for i, (offset, key, model, session, prompt, completion, cached, cost) in enumerate(USAGE_DATA):
        log.record(AuditRecord(f"u{i}", T0 + offset, key, session, model, "p", model, prompt, completion, cached, cost))


def u(group_by: str, group: Any, requests: int, prompt: int, completion: int, cached: int, cost: int) -> dict[str, Any]:
    return {group_by: group, "requests": requests, "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": cached, "cost_micros": cost}


def test_usage_sums_by_each_group_cost_first(new_log: Callable[..., AuditLog]) -> None:
    async def scenario() -> None:
        async with new_log() as log:
            usage_log_of(log)
            await log.flush()
            assert await log.usage() == [u("key", "alice", 3, 301, 31, 51, 4001), u("key", "bob", 2, 700, 70, 100, 1200),
                                         u("key", None, 1, 50, 5, 0, 0)]
            assert await log.usage(group_by="model") == [
                u("model", "claude", 1, 200, 20, 0, 3000), u("model", "gpt-4o", 4, 801, 81, 151, 2201),
                u("model", "llama", 1, 50, 5, 0, 0)]
            assert await log.usage(group_by="day") == [u("day", "2024-03-09", 3, 600, 60, 150, 4500),
                                                       u("day", "2024-03-10", 3, 451, 46, 1, 701)]
            assert await log.usage(group_by="session") == [
                u("session", "s1", 2, 300, 30, 50, 4000), u("session", "s2", 2, 401, 41, 1, 701),
                u("session", None, 2, 350, 35, 100, 500)]
            # filtered by key, and by time (half-open)
            assert await log.usage(group_by="model", key="alice") == [u("model", "claude", 1, 200, 20, 0, 3000),
                                                                      u("model", "gpt-4o", 2, 101, 11, 51, 1001)]
            assert await log.usage(since=T0 + DAY_MS) == [u("key", "bob", 1, 400, 40, 0, 700),
                                                          u("key", "alice", 1, 1, 1, 1, 1),
                                                          u("key", None, 1, 50, 5, 0, 0)]
            assert await log.usage(until=T0 + DAY_MS, group_by="day") == [u("day", "2024-03-09", 3, 600, 60, 150, 4500)]
            assert await log.usage(since=T0 + 1, until=T0 + DAY_MS + 1, key="bob", group_by="day") == [
                u("day", "2024-03-10", 1, 400, 40, 0, 700), u("day", "2024-03-09", 1, 300, 30, 100, 500)]
            assert await log.usage(since=T0 + 100 * DAY_MS) == []
            with pytest.raises(ValueError, match="group_by must be one of key, model, day, session"):
                await log.usage(group_by="provider")  # type: ignore[arg-type]
    run(scenario())


def test_purge_removes_older_records_only(new_log: Callable[..., AuditLog]) -> None:
    async def scenario() -> None:
        async with new_log() as log:
            for i in range(10):
                log.record(rec(i))
            await log.flush()
            assert await log.purge(T0 + 4) == 4  # T0 .. T0+3
            assert ids(await log.logs()) == [f"req-{i}" for i in range(9, 3, -1)]
            assert await log.usage() == [u("key", "team-a", 6, 60, 30, 0, 600)]  # the sums follow
            assert await log.purge(T0 + 4) == 0
            assert await log.purge(T0 + 1000) == 6
            assert await log.logs() == [] and await log.usage() == []
    run(scenario())


def test_long_names_and_errors_are_cut_when_recorded(new_log: Callable[..., AuditLog]) -> None:
    """A client picks the model and the session, an upstream the error: the queue holds them cut."""
    huge = AuditRecord("r" * 100_000, T0, "team-a", "s" * 100_000, "m" * 1_000_000, error="e" * 1_000_000)

    async def scenario() -> None:
        async with new_log() as log:
            log.record(huge)
            await log.flush()
            (got,) = await log.logs()
            assert got.model == "m" * NAME_LIMIT + "…" and got.session == "s" * NAME_LIMIT + "…"
            assert got.request_id == "r" * NAME_LIMIT + "…"
            assert got.error == "e" * ERROR_LIMIT + "… (1000000 characters)"
            assert len(huge.model) == 1_000_000  # the caller's record is left alone
    run(scenario())


def test_a_record_after_close_is_dropped_never_raised(new_log: Callable[..., AuditLog],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.audit")

    async def scenario() -> None:
        log = new_log()
        await log.start()
        await log.close()
        for i in range(3):
            log.record(rec(i))
        assert log.dropped == 3
        await log.close()  # twice is fine
    run(scenario())
    assert caplog.text.count("closed; dropping") == 1


# ── the memory log ─────────────────────────────────────────────────────────

def test_memory_log_keeps_the_newest_records() -> None:
    async def scenario() -> None:
        log = MemoryAuditLog(max_records=100)
        for i in range(1000):
            log.record(rec(i))
        assert len(log) == 100 and log.dropped == 0
        assert ids(await log.logs(limit=1000)) == [f"req-{i}" for i in range(999, 899, -1)]
    run(scenario())


# ── the SQLite log ─────────────────────────────────────────────────────────

def test_sqlite_close_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    n = 10_000

    async def write() -> None:
        log = SqliteAuditLog(path)
        await log.start()
        for i in range(n):
            log.record(rec(i, key_name=f"k{i % 10}"))
        await log.close()  # no flush: close writes what is queued
        assert log.written == n and log.dropped == 0

    async def reopen() -> None:
        async with SqliteAuditLog(path) as log:
            usage = await log.usage()
            assert sorted(row["key"] for row in usage) == [f"k{i}" for i in range(10)]
            assert sum(row["requests"] for row in usage) == n
            assert (await log.logs(limit=1))[0].request_id == f"req-{n - 1}"
    run(write())
    assert count_rows(path) == n
    run(reopen())


def test_sqlite_records_recorded_before_start_are_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = SqliteAuditLog(tmp_path / "audit.sqlite3")
        log.record(rec(1))  # built at import of the app, started on the worker's loop
        with pytest.raises(StorageError, match="not started"):
            await log.logs()
        async with log:
            await log.flush()
            assert ids(await log.logs()) == ["req-1"]
        with pytest.raises(StorageError, match="closed"):
            await log.logs()
        with pytest.raises(StorageError, match="closed"):
            await log.purge(T0)
        await log.flush()  # after close: nothing left to write
    run(scenario())


def test_sqlite_flush_while_closing_returns_once_all_is_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"

    async def scenario() -> None:
        log = SqliteAuditLog(path)
        await log.start()
        for i in range(5000):
            log.record(rec(i))
        await asyncio.gather(log.close(), log.flush(), log.flush())
    run(scenario())
    assert count_rows(path) == 5000


def _write_from_another_process(path: str, name: str, n: int, go: Any) -> None:
    """One ``--workers`` process: waits for the other, then records ``n`` records, 50 per commit."""
    async def main() -> None:
        async with SqliteAuditLog(path, busy_timeout_s=5.0) as log:
            go.wait(60)
            for i in range(n):
                log.record(AuditRecord(f"{name}-{i}", T0 + i, name, f"{name}-session", "gpt-4o", "p", "gpt-4o",
                                       prompt_tokens=2, completion_tokens=1, cost_micros=i))
                if i % 50 == 49:
                    await log.flush()  # a commit of 50 (20 per process, in turn with the other's)
    asyncio.run(main())


def test_sqlite_two_processes_write_one_file_a_reader_sees_all(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "audit.sqlite3"  # neither process finds it: both create it
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_write_from_another_process, args=(str(path), name, 1000, go))
             for name in ("w1", "w2")]
    for proc in procs:
        proc.start()

    async def read() -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with SqliteAuditLog(path) as reader:
            go.set()
            seen = []
            while any(proc.is_alive() for proc in procs):  # reading while they write
                seen.append(sum(row["requests"] for row in await reader.usage()))
                await asyncio.sleep(0.02)
                assert time.monotonic() < deadline, "the writers did not finish"
            for proc in procs:
                proc.join(30)
                assert proc.exitcode == 0
            assert seen == sorted(seen)  # never a step back
            usage = await reader.usage()
            assert usage == [u("key", name, 1000, 2000, 1000, 0, sum(range(1000))) for name in ("w1", "w2")]
            for name in ("w1", "w2"):
                got = await reader.logs(key=name, limit=MAX_LIMIT)
                assert sorted(ids(got)) == sorted(f"{name}-{i}" for i in range(1000))
            assert sorted(row["session"] for row in await reader.usage(group_by="session")) == \
                ["w1-session", "w2-session"]
    run(read())
    assert count_rows(path) == 2000


def test_sqlite_two_logs_in_one_process_share_the_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SqliteAuditLog(tmp_path / "a.sqlite3") as one, SqliteAuditLog(tmp_path / "a.sqlite3") as two:
            one.record(rec(1))
            await one.flush()
            assert ids(await two.logs()) == ["req-1"]  # written: the other worker reads it
    run(scenario())


def test_sqlite_drops_records_while_its_file_is_locked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another connection holds the write lock past the busy timeout, as a stalled disk would:
    the queue stops at its bound (the batch in the writer's hands counted), then all is written."""
    path = tmp_path / "audit.sqlite3"
    caplog.set_level(logging.INFO, logger="fastroute.audit")

    async def scenario() -> None:
        log = SqliteAuditLog(path, max_queued=100, busy_timeout_s=0.05)
        await log.start()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for i in range(1000):
                log.record(rec(i))  # never waits, never raises
            assert log.dropped == 900
            with pytest.raises(StorageUnavailable, match="cannot write to"):
                await log.flush()  # the writer tried and failed: it holds the 100
            for i in range(1000, 1010):
                log.record(rec(i))
            assert log.dropped == 910
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await log.flush()  # the lock is gone: the writer catches up
        log.record(rec(2000))  # room again
        await log.close()
        assert log.written == 101
    run(scenario())
    assert count_rows(path) == 101
    assert caplog.text.count("dropping new ones until it catches up") == 1
    assert "910 record(s) dropped while" in caplog.text
    assert caplog.text.count("records wait in memory and are tried again") == 1
    assert "writing to" in caplog.text and "again" in caplog.text


def test_sqlite_close_while_the_file_stays_locked_says_what_is_lost(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.sqlite3"
    caplog.set_level(logging.WARNING, logger="fastroute.audit")

    async def scenario() -> None:
        log = SqliteAuditLog(path, busy_timeout_s=0.05)
        await log.start()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for i in range(30):
                log.record(rec(i))
            await asyncio.wait_for(log.close(), 10)  # one more try, then it gives up
        finally:
            blocker.close()
    run(scenario())
    assert "closing with 30 record(s) not written" in caplog.text


def test_sqlite_a_record_the_database_refuses_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fastroute.audit")

    async def scenario() -> None:
        async with SqliteAuditLog(tmp_path / "audit.sqlite3") as log:
            log.record(rec(1))
            log.record(rec(2, provider={"not": "a string"}))  # the caller's bug
            log.record("not a record")  # type: ignore[arg-type]
            log.record(rec(3, prompt_tokens=2**70))  # too large for SQLite
            log.record(rec(4))
            await log.flush()
            assert ids(await log.logs()) == ["req-4", "req-1"]
            assert await log.usage() == [u("key", "team-a", 2, 20, 10, 0, 200)]
            log.record(rec(5))  # the writer goes on
            await log.flush()
            assert len(await log.logs()) == 3
    run(scenario())
    assert "not an AuditRecord (str); skipped" in caplog.text
    assert caplog.text.count("could not be written") == 2


def test_sqlite_retention_purges_at_start_and_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    now = time.time_ns() // 1_000_000

    async def seed() -> None:
        async with SqliteAuditLog(path) as log:
            for i in range(5):
                log.record(rec(i, ts=now - 10 * DAY_MS + i))  # older than a week
                log.record(rec(100 + i, ts=now - DAY_MS + i))

    async def scenario() -> None:
        async with SqliteAuditLog(path, retention_days=7, retention_interval_s=0.1) as log:
            deadline = time.monotonic() + 20
            while len(await log.logs()) != 5:  # purged at start
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert sorted(ids(await log.logs())) == [f"req-{100 + i}" for i in range(5)]
            log.record(rec(7, ts=now - 8 * DAY_MS))  # an old one written now: purged on the next turn
            await log.flush()
            while len(await log.logs()) != 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert await log.usage() == [u("key", "team-a", 5, 50, 25, 0, 500)]  # the hourly sums too
    run(seed())
    run(scenario())
    assert count_rows(path, "usage_hourly") == count_rows(path, "usage_sessions") == 1


def test_sqlite_retention_purges_a_backlog_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More old records than one retention turn takes: the next turns take the rest, and the
    records recorded meanwhile are written between them."""
    path = tmp_path / "audit.sqlite3"
    now = time.time_ns() // 1_000_000
    n = 12_000  # more than a turn: chunks of PURGE_CHUNK (5,000), 2 per turn below

    async def scenario() -> None:
        async with SqliteAuditLog(path) as log:
            for i in range(n):
                log.record(rec(i, ts=now - 30 * DAY_MS + i * 1000))
        monkeypatch.setattr(audit_sqlite, "RETENTION_CHUNKS", 2)
        async with SqliteAuditLog(path, retention_days=1) as log:
            log.record(rec(n, ts=now))
            deadline = time.monotonic() + 30
            while len(await log.logs(limit=2)) != 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert ids(await log.logs()) == [f"req-{n}"]
            assert await log.usage() == [u("key", "team-a", 1, 10, 5, 0, 100)]
    run(scenario())
    assert count_rows(path) == count_rows(path, "usage_hourly") == count_rows(path, "usage_sessions") == 1


def test_sqlite_queries_use_indexes(tmp_path: Path) -> None:
    """``EXPLAIN QUERY PLAN`` of the very SQL the log runs: logs() reads one index in order (no
    sort; it stops after ``limit`` rows), usage() reads usage_hourly and at most two hours of
    records through an index — never the whole table of records."""
    path = tmp_path / "audit.sqlite3"

    async def create() -> None:
        async with SqliteAuditLog(path) as log:
            for i in range(2000):
                log.record(rec(i, ts=T0 + i * 60_000, key_name=f"k{i % 20}", model=f"m{i % 5}", session=f"s{i % 50}"))
    run(create())
    db = sqlite3.connect(path)

    def plan(query: tuple[str, list[Any]]) -> list[str]:
        return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query[0], query[1])]

    try:
        assert plan(logs_query(key="k1")) == ["SEARCH audit USING INDEX audit_key (key_name=?)"]
        assert plan(logs_query(model="m1")) == ["SEARCH audit USING INDEX audit_model (model=?)"]
        assert plan(logs_query(session="s1")) == ["SEARCH audit USING INDEX audit_session (session=?)"]
        assert plan(logs_query(key="k1", since=T0, until=T0 + DAY_MS)) == [
            "SEARCH audit USING INDEX audit_key (key_name=? AND timestamp>? AND timestamp<?)"]
        assert plan(logs_query(since=T0, until=T0 + DAY_MS)) == [
            "SEARCH audit USING INDEX audit_timestamp (timestamp>? AND timestamp<?)"]
        assert plan(logs_query()) == ["SCAN audit USING INDEX audit_timestamp"]  # newest first, stops at limit
        (both,) = plan(logs_query(key="k1", model="m1"))
        assert both.startswith("SEARCH audit USING INDEX audit_")
        for group_by in ("key", "model", "day", "session"):
            for key in (None, "k1"):
                for since, until in ((None, None), (T0 + 1234, None), (None, T0 + 5 * HOUR_MS + 1),
                                     (T0 + 1234, T0 + DAY_MS - 1), (T0 + 10, T0 + 20)):
                    steps = plan(usage_query(since, until, group_by, key))
                    sums = "usage_sessions" if group_by == "session" else "usage_hourly"
                    reads = [s for s in steps if " audit" in s or " usage_" in s]
                    assert reads, steps
                    for step in reads:  # the hourly sums, or a range of an index of the records
                        assert sums in step or (step.startswith("SEARCH audit USING INDEX audit_")
                                                and "timestamp>? AND timestamp<?" in step), steps
        assert plan(usage_query(T0 + 1234, T0 + DAY_MS - 1, "model", "k1")) == [
            "CO-ROUTINE (subquery-3)", "COMPOUND QUERY", "LEFT-MOST SUBQUERY",
            "SEARCH audit USING INDEX audit_key (key_name=? AND timestamp>? AND timestamp<?)",
            "USE TEMP B-TREE FOR GROUP BY", "UNION ALL",
            "SEARCH usage_hourly USING PRIMARY KEY (hour>? AND hour<?)", "USE TEMP B-TREE FOR GROUP BY", "UNION ALL",
            "SEARCH audit USING INDEX audit_key (key_name=? AND timestamp>? AND timestamp<?)",
            "USE TEMP B-TREE FOR GROUP BY", "SCAN (subquery-3)", "USE TEMP B-TREE FOR GROUP BY",
            "USE TEMP B-TREE FOR ORDER BY"]
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_usage_over_hours_matches_the_records(new_log: Callable[..., AuditLog]) -> None:
    """The hourly sums and the records at either end of a range add up to what the records say
    (the memory log sums the records themselves), whatever the bounds — before and after a purge;
    and logs() with several filters finds what the memory log finds."""
    rng = random.Random(7)
    records = [AuditRecord(f"r{i}", T0 + rng.randrange(3 * DAY_MS), rng.choice([None, "", "a", "b", "c"]),
                           rng.choice([None, "", "s1", "s2"]), rng.choice(["m1", "m2", ""]), "p", "m",
                           rng.randrange(1000), rng.randrange(1000), rng.randrange(100),
                           rng.choice([None, rng.randrange(10_000)])) for i in range(3000)]
    bounds = [(None, None), (T0, None), (None, T0 + DAY_MS), (T0 + HOUR_MS, T0 + 2 * HOUR_MS),
              (T0 + 10, T0 + 20), (T0 + HOUR_MS - 1, T0 + HOUR_MS + 1), (T0 + 5, T0 + 3 * DAY_MS - 5),
              (T0 + 2 * DAY_MS, T0 + DAY_MS)]
    bounds += [(T0 + rng.randrange(3 * DAY_MS), T0 + rng.randrange(3 * DAY_MS)) for _ in range(10)]
    filters: list[dict[str, Any]] = [{}, {"key": "a"}, {"key": "", "model": "m1"}, {"model": "", "session": "s2"},
                                     {"key": "b", "model": "m2", "session": ""}, {"session": "s1"}]

    async def compare(log: AuditLog, memory: AuditLog) -> None:
        for since, until in bounds:
            for group_by in ("key", "model", "day", "session"):
                for key in (None, "a"):
                    assert await log.usage(since, until, group_by, key) == \
                        await memory.usage(since, until, group_by, key), (since, until, group_by, key)
            for f in filters:
                assert await log.logs(since=since, until=until, limit=500, **f) == \
                    await memory.logs(since=since, until=until, limit=500, **f), (since, until, f)

    async def scenario() -> None:
        memory = MemoryAuditLog()
        async with new_log(batch_max=128) as log:
            for r in records:
                log.record(r)
                memory.record(r)
            await log.flush()
            await compare(log, memory)
            cutoff = T0 + DAY_MS + rng.randrange(HOUR_MS)  # within an hour: its sums are taken apart
            assert await log.purge(cutoff) == await memory.purge(cutoff) > 0
            await compare(log, memory)
    run(scenario())


def test_sqlite_schema_is_versioned_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"

    async def create() -> None:
        async with SqliteAuditLog(path):
            pass
    run(create())
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),) == (2,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")} >= {
            "audit_timestamp", "audit_key", "audit_model", "audit_session"}
        db.execute("PRAGMA user_version = 99")
        db.commit()
    finally:
        db.close()
    with pytest.raises(StorageError) as info:
        run(create())
    assert f"{path} has schema version 99, written by a newer fastroute" in str(info.value)


def test_sqlite_cannot_open_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as info:
        run(SqliteAuditLog(blocker / "audit.sqlite3").start())
    assert str(blocker / "audit.sqlite3") in str(info.value)


# ── the package ────────────────────────────────────────────────────────────

def test_the_package_exports_what_it_means_to_and_imports_lightly() -> None:
    from fastroute.audit.redis import RedisAuditLog

    assert fastroute.audit.__all__ == ["MAX_LIMIT", "AuditLog", "AuditRecord", "MemoryAuditLog", "RedisAuditLog",
                                       "SqliteAuditLog"]
    assert fastroute.audit.SqliteAuditLog is SqliteAuditLog
    assert fastroute.audit.RedisAuditLog is RedisAuditLog
    code = ("import sys, fastroute.audit;"
            "print(','.join(m for m in ('sqlite3', 'fastroute.audit.sqlite', 'redis', 'fastroute.audit.redis')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_a_record_holds_no_key() -> None:
    assert not any("hash" in name or name in ("key", "api_key", "secret") for name in AuditRecord.__dataclass_fields__)
    assert AuditRecord.__slots__  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _no_thread_left(request: pytest.FixtureRequest) -> Iterator[None]:
    import threading

    before = {t.name for t in threading.enumerate()}
    yield
    left = {t.name for t in threading.enumerate() if t.name.startswith("fastroute-audit")} - before
    assert not left, f"threads left running: {left}"
