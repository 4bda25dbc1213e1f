"""The storage kinds side by side: put and get, in µs per operation.

    pytest benchmarks/test_bench_storage.py -q --benchmark-group-by=group

Each round is 1,000 operations on one uvloop event loop made once for the module
(``run_until_complete`` once per round), so the figures read as **ms per round
= µs per operation**.

- ``storage-put``: 1,000 puts of a 1 KiB value — what a request pays (a put is
  only queued).  The SQLite writer thread runs meanwhile and competes for the
  GIL, so part of its cost is in this figure; the Redis sender is a task on
  the loop and runs between rounds (the queue is flushed before each round,
  outside the timing).
- ``storage-put-written``: 1,000 puts and the flush that makes them visible to
  the other workers: the whole cost of a put, the writer's included.
- ``storage-get``: 1,000 gets of keys written (flushed) before, 1 KiB each —
  from the SQLite file or from Redis, not from the worker's queue.
- ``storage-sqlite-read``: one SQLite lookup by value size, read on the loop
  (``direct``), through ``asyncio.to_thread`` (``thread``), and what
  ``SqliteStore.get`` does (``store``: direct up to 64 KiB, its reader thread
  above) — the figures ``fastroute/storage/sqlite.py`` chose by.

Redis runs as a real ``redis-server`` in its own process on this machine
(skipped when there is none).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastroute.storage import Store
from fastroute.storage.memory import MemoryStore
from fastroute.storage.redis import RedisStore
from fastroute.storage.sqlite import _SELECT_VALUE, SqliteStore

N = 1000
VALUE = os.urandom(1024)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop,
          tmp_path: Path) -> Iterator[Store]:
    if kind == "redis":
        made: Store = RedisStore(request.getfixturevalue("redis_server").url, None, f"bench-{os.getpid()}:")
    elif kind == "sqlite":
        made = SqliteStore(tmp_path / "bench.sqlite3")
    else:
        made = MemoryStore()
    loop.run_until_complete(made.start())
    yield made
    loop.run_until_complete(made.close())


def test_put(benchmark: Any, store: Store, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "storage-put"
    keys = [f"resp_{i:06d}" for i in range(N)]

    def puts() -> None:
        for key in keys:
            store.put(key, VALUE, 600)

    benchmark.pedantic(puts, setup=lambda: loop.run_until_complete(store.flush()), rounds=30, warmup_rounds=2)
    loop.run_until_complete(store.flush())
    assert loop.run_until_complete(store.get(keys[-1])) == VALUE


def test_put_written(benchmark: Any, store: Store, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "storage-put-written"
    keys = [f"resp_{i:06d}" for i in range(N)]

    async def puts() -> None:
        for key in keys:
            store.put(key, VALUE, 600)
        await store.flush()

    benchmark.pedantic(lambda: loop.run_until_complete(puts()), rounds=20, warmup_rounds=2)
    assert loop.run_until_complete(store.get(keys[-1])) == VALUE


def test_get(benchmark: Any, store: Store, loop: asyncio.AbstractEventLoop) -> None:
    benchmark.group = "storage-get"
    keys = [f"resp_{i:06d}" for i in range(N)]
    for key in keys:
        store.put(key, VALUE, 600)
    loop.run_until_complete(store.flush())

    async def gets() -> int:
        found = 0
        for key in keys:
            found += await store.get(key) is not None
        return found

    assert benchmark.pedantic(lambda: loop.run_until_complete(gets()), rounds=20, warmup_rounds=2) == N


@pytest.mark.parametrize("mode", ["direct", "thread", "store"])
@pytest.mark.parametrize("size", [100, 4 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024])
def test_sqlite_read(benchmark: Any, loop: asyncio.AbstractEventLoop, tmp_path: Path, size: int, mode: str) -> None:
    benchmark.group = f"storage-sqlite-read-{size}B"
    count = 50  # distinct keys, each read N / count times a round
    store = SqliteStore(tmp_path / "read.sqlite3")
    loop.run_until_complete(store.start())
    keys = [f"k{i}" for i in range(count)]
    for key in keys:
        store.put(key, os.urandom(size), 600)
    loop.run_until_complete(store.flush())
    conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)

    def read(key: str) -> bytes:
        return conn.execute(_SELECT_VALUE, (key, time.time())).fetchone()[0]

    async def reads() -> int:
        total = 0
        for key in keys * (N // count):
            if mode == "direct":
                total += len(read(key))
            elif mode == "thread":
                total += len(await asyncio.to_thread(read, key))
            else:
                value = await store.get(key)
                assert value is not None
                total += len(value)
        return total

    try:
        assert benchmark.pedantic(lambda: loop.run_until_complete(reads()), rounds=5, warmup_rounds=1) == N * size
    finally:
        conn.close()
        loop.run_until_complete(store.close())
