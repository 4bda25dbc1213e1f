"""The audit log: what a request pays to be recorded, and the admin queries on a big table.

    pytest benchmarks/test_bench_audit.py -q --benchmark-group-by=group,param:impl

- ``audit-record``: 1,000 ``record()`` calls a round, on one uvloop event loop, so the figures
  read as **ms per round = µs per record** — what the request path pays (an append).  The
  SQLite writer thread runs meanwhile (the queue is flushed before each round, outside the
  timing) and competes for the GIL, so part of its cost is in this figure.
- ``audit-record-written``: 1,000 records and the flush that commits them: the whole cost of a
  record, the writer's included (µs per record, as above).
- ``audit-logs-by-key``: one ``logs(key=…)`` on a table of 100,000 records (100 keys, so 1,000
  records each), ``limit`` 100 and 1,000 — the hop to the reader thread and back included.
- ``audit-usage``: one ``usage()`` on the same table, over everything and over a range that
  ends inside an hour (the hourly sums, and the records of a part of an hour).

The memory log runs the same queries by scanning what it holds, for comparison.  Redis is a
real ``redis-server`` in its own process on this machine (skipped when there is none): its
writer is a task on the same loop, so ``audit-record-written`` holds the encoding of a batch and
the round trips of its scripts (``BATCH_MAX`` records each), and the queries the parsing of
Redis' answers by redis-py — all on the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastroute.audit import (
    AuditLog,
    AuditRecord,
    MemoryAuditLog,
    RedisAuditLog,
    SqliteAuditLog,
)
from fastroute.audit.sqlite import HOUR_MS

N = 1000
TABLE = 100_000
T0 = 1_709_942_400_000


def record(i: int) -> AuditRecord:
    return AuditRecord(f"req-{i:08d}-3f2a9c", T0 + i * 250, f"key-{i % 100}", f"sess-{i % 2000}", f"model-{i % 8}",
                       "openai", f"model-{i % 8}", 1200, 300, 800, 4500, 812.5, 95.0, 200, None, True)


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def make(impl: str, path: Path, request: pytest.FixtureRequest) -> AuditLog:
    if impl == "redis":
        url = request.getfixturevalue("redis_server").url
        return RedisAuditLog(url, None, f"bench-{uuid.uuid4().hex[:8]}:")
    return SqliteAuditLog(path) if impl == "sqlite" else MemoryAuditLog()


@pytest.fixture
def audit_log(impl: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
              request: pytest.FixtureRequest) -> Iterator[AuditLog]:
    log = make(impl, tmp_path / "audit.sqlite3", request)
    loop.run_until_complete(log.start())
    yield log
    loop.run_until_complete(log.close())


@pytest.fixture(scope="module")
def big(impl: str, loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[tuple[str, AuditLog]]:
    """A log of 100,000 records, made once for the module."""
    log = make(impl, tmp_path_factory.mktemp("audit") / "audit.sqlite3", request)
    loop.run_until_complete(log.start())
    for i in range(TABLE):
        log.record(record(i))
    loop.run_until_complete(log.flush())
    yield impl, log
    loop.run_until_complete(log.close())


def test_record(benchmark: Any, audit_log: AuditLog, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "audit-record"
    records = [record(i) for i in range(N)]

    def records_() -> None:
        put = audit_log.record
        for r in records:
            put(r)

    benchmark.pedantic(records_, setup=lambda: loop.run_until_complete(audit_log.flush()), rounds=30,
                       warmup_rounds=2)
    loop.run_until_complete(audit_log.flush())
    assert audit_log.dropped == 0


def test_record_written(benchmark: Any, audit_log: AuditLog, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "audit-record-written"
    records = [record(i) for i in range(N)]

    async def written() -> None:
        for r in records:
            audit_log.record(r)
        await audit_log.flush()

    benchmark.pedantic(lambda: loop.run_until_complete(written()), rounds=10, warmup_rounds=1)
    assert audit_log.dropped == 0


@pytest.mark.parametrize("limit", [100, 1000])
def test_logs_by_key(benchmark: Any, big: tuple[str, AuditLog], loop: asyncio.AbstractEventLoop, limit: int) -> None:
    impl, log = big
    benchmark.group = f"audit-logs-by-key-limit-{limit}"
    got = benchmark.pedantic(lambda: loop.run_until_complete(log.logs(key="key-7", limit=limit)),
                             rounds=5 if impl == "memory" else 30, warmup_rounds=1)
    assert len(got) == limit and got[0].request_id == f"req-{TABLE - 93:08d}-3f2a9c"  # 99,907: the newest of key-7


@pytest.mark.parametrize("span", ["all", "range"])
def test_usage(benchmark: Any, big: tuple[str, AuditLog], loop: asyncio.AbstractEventLoop, span: str) -> None:
    impl, log = big
    benchmark.group = f"audit-usage-{span}"
    since, until = (None, None) if span == "all" else (T0 + 1234, T0 + 5 * HOUR_MS + 999_999)
    got = benchmark.pedantic(lambda: loop.run_until_complete(log.usage(since, until, "model")),
                             rounds=5 if impl == "memory" else 30, warmup_rounds=1)
    assert len(got) == 8 and (span != "all" or sum(row["requests"] for row in got) == TABLE)
