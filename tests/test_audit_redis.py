"""The Redis audit log on a real redis-server with a password: its keys and what they hold,
names a client chose, several instances and processes writing one Redis, Redis down and back
with nothing lost, retention, and the password never shown.  (The behaviour every kind shares —
the order, the filters, the sums — is tests/test_audit.py's, run on this kind too.)
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import fastroute.audit.redis as audit_redis
from fastroute.audit import MAX_LIMIT, AuditRecord, MemoryAuditLog
from fastroute.audit.redis import HOUR_MS, RedisAuditLog
from fastroute.storage import StorageError, StorageUnavailable
from tests.conftest import free_port
from tests.redis_server import PASSWORD, RedisServer, redis_url
from tests.test_audit import T0, ids, rec, run, u

PASSWORD_ENV = "FR_TEST_AUDIT_REDIS_PASSWORD"
DAY_MS = 86_400_000


@pytest.fixture
def url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)  # spawned children inherit it
    return redis_url(redis_server.port)


@pytest.fixture
def prefix() -> str:
    """This test's own key prefix on the module's redis-server."""
    return f"t-{uuid.uuid4().hex[:10]}:"


def raw_client(url: str) -> Any:
    import redis.asyncio as redis

    return redis.from_url(url, password=PASSWORD)


async def keys_of(url: str, prefix: str) -> set[str]:
    raw = raw_client(url)
    try:
        return {k.decode() for k in await raw.keys(prefix.replace("*", "\\*") + "*")}
    finally:
        await raw.aclose()


async def command_calls(raw: Any, *commands: str) -> dict[str, int]:
    """How many times Redis ran each command since the last CONFIG RESETSTAT (inside scripts too)."""
    stats = await raw.info("commandstats")
    return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in commands}


def h(name: str) -> str:
    return name.encode().hex()


# ── the keys ───────────────────────────────────────────────────────────────

def test_keys_are_under_the_prefix_and_hold_what_the_docstring_says(url: str, prefix: str) -> None:
    p = prefix + "audit:"
    hour = T0 // HOUR_MS

    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            log.record(rec(1, session="s1"))
            log.record(rec(2, key_name=None, prompt_tokens=7, cost_micros=None))
            await log.flush()
            writer = log._writer_id
            assert await keys_of(url, prefix) == {
                p + "id", p + "rec", p + "t", p + "k:" + h("team-a"), p + "m:" + h("gpt-4o"), p + "s:" + h("s1"),
                p + "hours", p + f"u:{hour}", p + f"v:{hour}", p + f"w:{writer}"}
            raw = raw_client(url)
            try:
                assert await raw.get(p + "id") == b"2"
                assert await raw.zrange(p + "t", 0, -1, withscores=True) == [(b"000000000000001", T0 + 1),
                                                                             (b"000000000000002", T0 + 2)]
                assert await raw.zrange(p + "k:" + h("team-a"), 0, -1) == [b"000000000000001"]
                assert await raw.hgetall(p + f"u:{hour}") == {f"{h('team-a')}:{h('gpt-4o')}".encode(): b"1 10 5 0 100",
                                                              f"-:{h('gpt-4o')}".encode(): b"1 7 5 0 0"}
                assert await raw.hgetall(p + f"v:{hour}") == {f"{h('team-a')}:{h('s1')}".encode(): b"1 10 5 0 100",
                                                              b"-:": b"1 7 5 0 0"}
                assert await raw.zrange(p + "hours", 0, -1) == [str(hour).encode()]
                assert 0 < await raw.pttl(p + f"w:{writer}") <= DAY_MS
            finally:
                await raw.aclose()
            assert await log.purge(T0 + 1000) == 2
            assert await keys_of(url, prefix) == {p + "id", p + f"w:{writer}"}  # nothing else is left
    run(scenario())


def test_prefixes_keep_logs_apart(url: str) -> None:
    one, two = f"iso-{uuid.uuid4().hex[:6]}:", f"iso-{uuid.uuid4().hex[:6]}:"

    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, one) as a, RedisAuditLog(url, PASSWORD_ENV, two) as b, \
                RedisAuditLog(url, PASSWORD_ENV, one + "audit:") as nested:  # a prefix that starts with another's keys
            a.record(rec(1))
            b.record(rec(2))
            nested.record(rec(3))
            await asyncio.gather(a.flush(), b.flush(), nested.flush())
            assert ids(await a.logs()) == ["req-1"]
            assert ids(await b.logs()) == ["req-2"]
            assert ids(await nested.logs()) == ["req-3"]
            assert await a.usage() == [u("key", "team-a", 1, 10, 5, 0, 100)]
            assert await b.purge(T0 + 1000) == 1
            assert ids(await a.logs()) == ["req-1"] and ids(await nested.logs()) == ["req-3"]
    run(scenario())


def test_names_a_client_chose_neither_collide_nor_escape(url: str, prefix: str) -> None:
    """Key names, models and sessions with ``:``, ``*``, spaces, braces and unicode, empty and none —
    and pairs that would collide if joined as they are: the same answers as the memory log's."""
    names = ["a:b", "a", "b:c", "c", "*", "k*y", "with space", "{tag}", "日本語 ✓", "", "\x00nul", "-"]
    records = []
    for i in range(240):
        records.append(AuditRecord(f"r{i}", T0 + i * 60_000, names[i % 12] if i % 13 else None,
                                   names[(i // 3) % 12] if i % 7 else None, names[(i * 5) % 12], "p", "m",
                                   i, 2 * i, i % 3, i * 10))
    # "a:b" + "c" and "a" + "b:c": one string if joined with ":", two groups here
    records += [AuditRecord("x1", T0, "a:b", "c", "c"), AuditRecord("x2", T0, "a", "b:c", "b:c")]

    async def scenario() -> None:
        memory = MemoryAuditLog()
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            for r in records:
                log.record(r)
                memory.record(r)
            await log.flush()
            for name in [*names, "nobody", "a:*"]:
                for f in ({"key": name}, {"model": name}, {"session": name}, {"key": name, "model": "c"}):
                    assert await log.logs(limit=MAX_LIMIT, **f) == await memory.logs(limit=MAX_LIMIT, **f), f
                for group_by in ("key", "model", "session", "day"):
                    for since, until in ((None, None), (T0 + 1, T0 + 3 * HOUR_MS + 7)):
                        assert await log.usage(since, until, group_by, name) == \
                            await memory.usage(since, until, group_by, name), (name, group_by, since)
            for group_by in ("key", "model", "session"):
                assert await log.usage(group_by=group_by) == await memory.usage(group_by=group_by)
            first = await log.purge(T0 + 5 * HOUR_MS)
            assert first == await memory.purge(T0 + 5 * HOUR_MS) > 0
            assert await log.usage(group_by="session") == await memory.usage(group_by="session")
            assert await log.purge(T0 + 100 * DAY_MS) == len(records) - first
            assert await keys_of(url, prefix) == {prefix + "audit:id", prefix + f"audit:w:{log._writer_id}"}
    run(scenario())


# ── the queries read what they need ───────────────────────────────────────

def test_logs_walk_the_smallest_index_and_usage_reads_sums(url: str, prefix: str) -> None:
    """logs() with a key and a model walks the key's 100 entries, not the model's 2,000; usage()
    over whole hours reads no record; over a range cutting an hour, only that hour's records."""
    async def scenario() -> None:
        raw = raw_client(url)
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            for i in range(2000):  # one a minute: 33 hours and a bit
                log.record(rec(i, ts=T0 + i * 60_000, key_name=f"k{i % 20}", model="m0"))
            await log.flush()
            for f in ({"key": "k1", "model": "m0"}, {"model": "m0", "key": "k1"}):
                await raw.config_resetstat()
                got = await log.logs(limit=MAX_LIMIT, **f)
                assert ids(got) == [f"req-{i}" for i in range(1999, -1, -1) if i % 20 == 1]
                assert (await command_calls(raw, "zscore"))["zscore"] == 100
            await raw.config_resetstat()
            assert ids(await log.logs(model="m0", limit=3)) == ["req-1999", "req-1998", "req-1997"]
            assert (await command_calls(raw, "zrevrange", "hmget")) == {"zrevrange": 1, "hmget": 1}
            await raw.config_resetstat()
            assert await log.usage(T0, T0 + 30 * HOUR_MS, "model") == [u("model", "m0", 1800, 18000, 9000, 0, 180000)]
            assert (await command_calls(raw, "hmget", "hgetall")) == {"hmget": 0, "hgetall": 30}
            await raw.config_resetstat()
            assert await log.usage(T0 + 30_000, T0 + 2 * HOUR_MS, "model") == [
                u("model", "m0", 119, 1190, 595, 0, 11900)]
            assert (await command_calls(raw, "hmget", "hgetall")) == {"hmget": 1, "hgetall": 1}  # 59 records
        await raw.aclose()
    run(scenario())


def test_queries_walk_many_pages_exactly(url: str, prefix: str) -> None:
    """More entries than one script looks at (PAGE): the walk goes on from the last one seen, and
    neither skips nor repeats one — ties of a timestamp across a page's end included."""
    n = 5000
    records = [rec(i, ts=T0 + (i // 7) * 500, key_name=f"k{i % 2}", model=f"m{i % 3}", session=f"s{i % 5}")
               for i in range(n)]  # 7 records a ms, all in the first hour

    async def scenario() -> None:
        memory = MemoryAuditLog()
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            for r in records:
                log.record(r)
                memory.record(r)
            await log.flush()
            for f in ({"key": "k0", "model": "m0"}, {"key": "k1", "model": "m2", "session": "s3"},
                      {"model": "m1", "since": T0 + 1000, "until": T0 + 300_000}):
                got = await log.logs(limit=MAX_LIMIT, **f)
                assert got == await memory.logs(limit=MAX_LIMIT, **f), f
                assert len(got) == len({r.request_id for r in got}) > 100
            for group_by in ("key", "model", "session", "day"):  # 4,999 records of a part of an hour
                assert await log.usage(T0 + 1, T0 + 2 * HOUR_MS, group_by) == \
                    await memory.usage(T0 + 1, T0 + 2 * HOUR_MS, group_by)
            assert sum(row["requests"] for row in await log.usage(T0 + 1, T0 + HOUR_MS)) == n - 7
    run(scenario())


# ── several instances, several processes ──────────────────────────────────

def test_two_instances_with_their_own_connections_see_all(url: str, prefix: str) -> None:
    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as one, RedisAuditLog(url, PASSWORD_ENV, prefix) as two:
            assert one._client is not two._client
            one.record(rec(1, key_name="one"))
            two.record(rec(2, key_name="two"))
            await one.flush()
            await two.flush()
            one.record(rec(3, ts=T0 + 2, key_name="one"))  # the same ms as two's, written after it: newer
            await one.flush()
            for log in (one, two):
                assert ids(await log.logs()) == ["req-3", "req-2", "req-1"]
                assert await log.usage() == [u("key", "one", 2, 20, 10, 0, 200), u("key", "two", 1, 10, 5, 0, 100)]
            assert await two.purge(T0 + 2) == 1  # either purges for both
            assert ids(await one.logs()) == ["req-3", "req-2"]
    run(scenario())


def _write_from_another_process(url: str, prefix: str, name: str, n: int, go: Any) -> None:
    """Another fastroute instance: waits for the other, then records ``n`` records, 50 per flush."""
    async def main() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            go.wait(60)
            for i in range(n):
                log.record(AuditRecord(f"{name}-{i}", T0 + i, name, f"{name}-session", "gpt-4o", "p", "gpt-4o",
                                       prompt_tokens=2, completion_tokens=1, cost_micros=i))
                if i % 50 == 49:
                    await log.flush()
            assert log.written == n and log.dropped == 0
    asyncio.run(main())


def test_two_processes_write_one_redis_a_reader_sees_all(url: str, prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_write_from_another_process, args=(url, prefix, name, 1000, go))
             for name in ("w1", "w2")]
    for proc in procs:
        proc.start()

    async def read() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as reader:
            go.set()
            deadline = time.monotonic() + 60
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
            everything = await reader.logs(limit=MAX_LIMIT)
            assert len(everything) == MAX_LIMIT and {r.timestamp for r in everything} == set(range(T0 + 500, T0 + 1000))
    try:
        run(read())
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()


def test_a_batch_sent_again_is_written_once(url: str, prefix: str) -> None:
    """The answer to a batch was lost (a timeout) and it is sent again: its number makes it a no-op."""
    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log, RedisAuditLog(url, PASSWORD_ENV, prefix) as sender:
            args, n = sender._encode([rec(1), rec(2)], 1)
            write = sender._scripts[0]
            assert n == 2 and await write(args=args) == 2
            assert await write(args=args) == 0
            args, n = sender._encode([rec(3)], 2)
            assert await write(args=args) == 1
            assert ids(await log.logs()) == ["req-3", "req-2", "req-1"]
            assert await log.usage() == [u("key", "team-a", 3, 30, 15, 0, 300)]
    run(scenario())


# ── the queue: before start, at close, records Redis cannot take ──────────

def test_records_before_start_and_at_close_are_written(url: str, prefix: str) -> None:
    n = 5000

    async def scenario() -> None:
        log = RedisAuditLog(url, PASSWORD_ENV, prefix)
        log.record(rec(-1))  # built at import of the app, started on the worker's loop
        with pytest.raises(StorageError, match="not started"):
            await log.logs()
        with pytest.raises(StorageError, match="not started"):
            await log.flush()
        await log.start()
        for i in range(n):
            log.record(rec(i, key_name=f"k{i % 10}"))
        await asyncio.gather(log.close(), log.flush(), log.flush())  # no flush before: close writes the queue
        assert log.written == n + 1 and log.dropped == 0
        with pytest.raises(StorageError, match="closed"):
            await log.logs()
        with pytest.raises(StorageError, match="closed"):
            await log.purge(T0)
        await log.flush()  # after close: nothing left to write
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as again:
            assert sum(row["requests"] for row in await again.usage()) == n + 1
            assert ids(await again.logs(limit=2)) == [f"req-{n - 1}", f"req-{n - 2}"]
    run(scenario())


def test_a_record_redis_cannot_take_is_skipped(url: str, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fastroute.audit")

    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            log.record(rec(1))
            log.record(rec(2, provider={"not": "a string"}))  # the caller's bug
            log.record("not a record")  # type: ignore[arg-type]
            log.record(rec(3, prompt_tokens=2**70))  # past what Redis' Lua sums exactly
            log.record(rec(4, model="\ud800"))  # a lone surrogate: no UTF-8
            log.record(rec(5))
            await log.flush()
            assert ids(await log.logs()) == ["req-5", "req-1"]
            assert await log.usage() == [u("key", "team-a", 2, 20, 10, 0, 200)]
            log.record(rec(6))  # the writer goes on
            await log.flush()
            assert len(await log.logs()) == 3
    run(scenario())
    assert "not an AuditRecord (str); skipped" in caplog.text
    assert caplog.text.count("could not be written") == 3


# ── retention ─────────────────────────────────────────────────────────────

def test_retention_purges_at_start_and_every_interval(url: str, prefix: str) -> None:
    now = time.time_ns() // 1_000_000

    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            for i in range(5):
                log.record(rec(i, ts=now - 10 * DAY_MS + i * HOUR_MS))  # older than a week, in 5 hours
                log.record(rec(100 + i, ts=now - DAY_MS + i))
        async with RedisAuditLog(url, PASSWORD_ENV, prefix, retention_days=7, retention_interval_s=0.1) as log:
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
        raw = raw_client(url)
        try:
            hours = await raw.zrange(prefix + "audit:hours", 0, -1)
            assert {int(x) for x in hours} <= {(now - DAY_MS) // HOUR_MS, (now - DAY_MS + 4) // HOUR_MS}
            left = {k for k in await keys_of(url, prefix) if k.startswith((prefix + "audit:u:", prefix + "audit:v:"))}
            assert left == {prefix + f"audit:{t}:{int(x)}" for t in "uv" for x in hours}
        finally:
            await raw.aclose()
    run(scenario())


def test_retention_purges_a_backlog_in_chunks(url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """More old records than one retention turn takes: the next turns take the rest, and the
    records recorded meanwhile are written between them."""
    now = time.time_ns() // 1_000_000
    n = 1200  # more than a turn: chunks of PURGE_CHUNK (200), 2 per turn below

    async def scenario() -> None:
        async with RedisAuditLog(url, PASSWORD_ENV, prefix) as log:
            for i in range(n):
                log.record(rec(i, ts=now - 30 * DAY_MS + i * 60_000))
        monkeypatch.setattr(audit_redis, "RETENTION_CHUNKS", 2)
        async with RedisAuditLog(url, PASSWORD_ENV, prefix, retention_days=1, retention_interval_s=3600) as log:
            log.record(rec(n, ts=now))
            deadline = time.monotonic() + 30
            while len(await log.logs(limit=2)) != 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert ids(await log.logs()) == [f"req-{n}"]
            assert await log.usage() == [u("key", "team-a", 1, 10, 5, 0, 100)]
            writer = log._writer_id
        assert {k.rpartition(":")[0] for k in await keys_of(url, prefix) if ":w:" not in k} == {
            prefix + "audit", prefix + "audit:k", prefix + "audit:m", prefix + "audit:u", prefix + "audit:v"}
        assert prefix + f"audit:w:{writer}" in await keys_of(url, prefix)
    run(scenario())


# ── Redis down, refusing, and back ────────────────────────────────────────

def test_down_and_back_nothing_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """Killed mid-run: records wait (beyond max_queued they are dropped and counted), flush() and
    the queries raise StorageUnavailable; restarted on its append-only file: all that waited is
    written, said once each way."""
    caplog.set_level(logging.INFO, logger="fastroute.audit")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    port = free_port()
    url = redis_url(port)
    server = RedisServer(port, PASSWORD, aof_dir=tmp_path)

    async def scenario() -> None:
        nonlocal server
        async with RedisAuditLog(url, PASSWORD_ENV, "down:", max_queued=100) as log:
            for i in range(10):
                log.record(rec(i))
            await log.flush()
            server.kill()
            for i in range(10, 60):
                log.record(rec(i))  # never waits, never raises
            with pytest.raises(StorageUnavailable, match="cannot reach"):
                await log.flush()  # tried at once, failed: the records stay queued
            with pytest.raises(StorageUnavailable, match="cannot reach"):
                await log.logs()
            with pytest.raises(StorageUnavailable, match="cannot reach"):
                await log.usage()
            with pytest.raises(StorageUnavailable, match="cannot reach"):
                await log.purge(T0)
            for i in range(60, 200):
                log.record(rec(i))
            assert log.dropped == 90  # 100 wait: 50, then 50 of the 140
            server = RedisServer(port, PASSWORD, aof_dir=tmp_path)  # back, with what it had
            deadline = time.monotonic() + 30
            while True:
                try:
                    await log.flush()  # at once; or the writer's own retries got there first
                    break
                except StorageUnavailable:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.05)
            log.record(rec(1000))  # room again
            await log.flush()
            assert ids(await log.logs(limit=MAX_LIMIT)) == ["req-1000"] + [f"req-{i}" for i in range(109, -1, -1)]
            assert await log.usage() == [u("key", "team-a", 111, 1110, 555, 0, 11100)]
            assert log.written == 111
    try:
        run(scenario())
    finally:
        server.kill()
    assert caplog.text.count(f"audit: cannot reach {url} (ConnectionError); records wait in memory") == 1
    assert caplog.text.count(f"audit: {url} is back; 100 record(s) that waited are written") == 1
    assert caplog.text.count("dropping new ones until it catches up") == 1
    assert "90 record(s) dropped while" in caplog.text
    assert PASSWORD not in caplog.text


def test_close_while_down_says_what_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.audit")
    url = redis_url(free_port())  # nothing listens there

    async def scenario() -> None:
        log = RedisAuditLog(url, None, "never:")
        await log.start()
        for i in range(30):
            log.record(rec(i))
        await asyncio.wait_for(log.close(), 10)  # one more try, then it gives up
    run(scenario())
    assert caplog.text.count("closing with 30 record(s) not written") == 1


def test_the_password_is_never_shown(url: str, prefix: str, redis_server: RedisServer,
                                     monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastroute.audit")
    monkeypatch.setenv("FR_TEST_AUDIT_WRONG_PASSWORD", PASSWORD + "-wrong")
    in_url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    shown: list[str] = []

    async def scenario() -> None:
        async with RedisAuditLog(url, "FR_TEST_AUDIT_WRONG_PASSWORD", prefix) as wrong:
            shown.extend([wrong.where, repr(wrong)])
            wrong.record(rec(1))
            for call in (wrong.flush(), wrong.logs(), wrong.usage(), wrong.purge(T0)):
                with pytest.raises(StorageUnavailable) as info:
                    await call
                shown.append(str(info.value))
            assert "AuthenticationError" in shown[-1]
        async with RedisAuditLog(in_url, None, prefix) as right:  # the password in the URL: works, never shown
            shown.extend([right.where, repr(right)])
            right.record(rec(2))
            await right.flush()
            assert ids(await right.logs()) == ["req-2"]  # the wrong one's record never got in
    run(scenario())
    assert shown[0] == f"redis://127.0.0.1:{redis_server.port}/0" == shown[-2]
    assert caplog.text.count(f"audit: cannot reach {url} (AuthenticationError)") == 1
    assert "closing with 1 record(s) not written" in caplog.text
    for text in [*shown, caplog.text]:
        assert PASSWORD not in text
