"""The storage seam: every kind through the one interface, on real parts — a real SQLite file
(shared by separate processes, surviving a restart) and a real redis-server with a password
(down, then back) — and the ``[storage]`` config section."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastroute.config import config_from_dict, require_env
from fastroute.errors import ConfigError
from fastroute.storage import StorageError, StorageUnavailable, Store, open_store
from fastroute.storage.memory import MemoryStore
from fastroute.storage.redis import RedisStore
from fastroute.storage.sqlite import MIGRATIONS, SqliteStore
from tests.conftest import ROOT, free_port
from tests.redis_server import PASSWORD, RedisServer, redis_url

KINDS = ["memory", "sqlite", "redis"]
PASSWORD_ENV = "FR_TEST_STORAGE_REDIS_PASSWORD"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def storage_config(section: dict[str, Any]) -> Any:
    return config_from_dict({"storage": section}).storage


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Callable[[], Store]:
    """Builds stores of one kind through ``open_store``: each call is another worker of the same deployment."""
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        section = {"kind": "redis", "redis_url": redis_url(server.port), "redis_password_env": PASSWORD_ENV,
                   "key_prefix": f"test-{uuid.uuid4().hex[:8]}:"}  # each test its own keys on the shared server
    elif kind == "sqlite":
        section = {"kind": "sqlite", "path": str(tmp_path / "state.sqlite3")}
    else:
        section = {"kind": "memory"}
    config = storage_config(section)
    return lambda: open_store(config)


# ── every kind, one interface ─────────────────────────────────────────────

def test_put_get_delete(new_store: Callable[[], Store]) -> None:
    async def scenario() -> None:
        async with new_store() as store:
            store.put("resp_1", b'{"id": "resp_1"}', 60)
            assert await store.get("resp_1") == b'{"id": "resp_1"}'  # this worker reads its put at once
            await store.flush()
            assert await store.get("resp_1") == b'{"id": "resp_1"}'
            assert await store.get("resp_unknown") is None
            assert await store.delete("resp_1") is True
            assert await store.get("resp_1") is None
            assert await store.delete("resp_1") is False
            assert await store.delete("never-there") is False
            await store.flush()
            assert await store.get("resp_1") is None
    run(scenario())


def test_overwrite_and_delete_before_written(new_store: Callable[[], Store]) -> None:
    async def scenario() -> None:
        async with new_store() as store:
            store.put("k", b"one", 60)
            store.put("k", b"two", 60)
            assert await store.get("k") == b"two"
            await store.flush()
            assert await store.get("k") == b"two"
            store.put("k", b"three", 60)
            assert await store.get("k") == b"three"
            # queued puts and then a delete: the delete wins, however far the writer got
            store.put("gone", b"x", 60)
            store.put("gone", b"y", 60)
            assert await store.delete("gone") is True
            await store.flush()
            assert await store.get("gone") is None
            assert await store.get("k") == b"three"
    run(scenario())


def test_ttl_expiry(new_store: Callable[[], Store]) -> None:
    async def scenario() -> None:
        async with new_store() as store:
            store.put("short", b"s", 0.3)
            store.put("long", b"l", 60)
            store.put("queued-short", b"q", 0.3)
            await store.flush()
            await asyncio.sleep(0.5)
            assert await store.get("short") is None
            assert await store.get("queued-short") is None
            assert await store.get("long") == b"l"
            assert await store.delete("short") is False  # an expired key is not "there"
            store.put("short", b"again", 60)  # an expired key can be put again
            assert await store.get("short") == b"again"
    run(scenario())


def test_values_come_back_byte_for_byte(new_store: Callable[[], Store]) -> None:
    values = {"empty": b"", "binary": bytes(range(256)) * 4, "large": os.urandom(200 * 1024),
              "clé/ünïcode ✓": "ünïcode ✓".encode()}

    async def scenario() -> None:
        async with new_store() as store:
            for key, value in values.items():
                store.put(key, value, 60)
            for key, value in values.items():
                assert await store.get(key) == value
            await store.flush()
            for key, value in values.items():
                assert await store.get(key) == value
            store.put("view", memoryview(b"from a view"), 60)
            assert await store.get("view") == b"from a view"
    run(scenario())


def test_flushed_puts_reach_the_other_workers(kind: str, new_store: Callable[[], Store]) -> None:
    """sqlite and redis are shared; memory is each worker's own (as documented)."""
    async def scenario() -> None:
        async with new_store() as a, new_store() as b:
            a.put("from-a", b"hello", 60)
            await a.flush()
            seen = await b.get("from-a")
            assert seen == (None if kind == "memory" else b"hello")
            if kind != "memory":
                assert await b.delete("from-a") is True
                assert await a.get("from-a") is None
    run(scenario())


def test_close_writes_what_was_queued_and_a_later_put_is_dropped(kind: str, new_store: Callable[[], Store]) -> None:
    async def scenario() -> None:
        store = new_store()
        await store.start()
        store.put("k", b"v", 60)
        await store.close()
        store.put("after", b"v", 60)  # dropped, never raised
        await store.close()  # twice is fine
        if kind != "memory":
            with pytest.raises(StorageError):
                await store.get("k")  # closed says so
        async with new_store() as other:
            assert await other.get("k") == (None if kind == "memory" else b"v")
            assert await other.get("after") is None
    run(scenario())


def test_where_names_the_place_never_the_password(kind: str, new_store: Callable[[], Store], tmp_path: Path) -> None:
    store = new_store()
    assert PASSWORD not in store.where and PASSWORD not in repr(store)
    if kind == "sqlite":
        assert store.where == str(tmp_path / "state.sqlite3")
    elif kind == "redis":
        assert store.where.startswith("redis://127.0.0.1:") and store.where.endswith("/0")
    else:
        assert "memory" in store.where


# ── memory ────────────────────────────────────────────────────────────────

def test_memory_evicts_the_least_recently_used() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_bytes=3 * 101)  # three entries of a 1-byte key and 100 bytes
        async with store:
            for key in "abc":
                store.put(key, key.encode() * 100, 60)
            assert await store.get("a") is not None  # a is now the most recently used; b the least
            store.put("d", b"d" * 100, 60)
            assert await store.get("b") is None
            assert [await store.get(k) is not None for k in "acd"] == [True, True, True]
            assert store.bytes <= store.max_bytes and len(store) == 3
            store.put("e", b"e" * 250, 60)  # needs the room of more than two
            assert [await store.get(k) is not None for k in "acde"] == [False, False, False, True]
            assert store.bytes == 251
    run(scenario())


def test_memory_value_larger_than_the_bound_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with MemoryStore(max_bytes=1000) as store:
            store.put("k", b"small", 60)
            store.put("k", b"x" * 2000, 60)  # supersedes the old value, and is too big to keep
            assert await store.get("k") is None
            assert store.bytes == 0
    caplog.set_level(logging.WARNING, logger="fastroute.storage")
    run(scenario())
    assert "larger than the memory store's bound" in caplog.text


def test_memory_drops_expired_entries_as_it_goes() -> None:
    async def scenario() -> None:
        async with MemoryStore() as store:
            for i in range(10):
                store.put(f"old{i}", b"x" * 100, 0.05)
            await asyncio.sleep(0.1)
            for i in range(5):
                store.put(f"new{i}", b"y", 60)
            assert len(store) == 5 and store.bytes == 5 * 5
    run(scenario())


# ── sqlite ────────────────────────────────────────────────────────────────

CHILD = """
import asyncio, sys
from fastroute.storage.sqlite import SqliteStore

async def main(path):
    async with SqliteStore(path) as store:
        store.put("from-child", b"child was here", 60)
        await store.flush()
        print("flushed", flush=True)
        sys.stdin.readline()  # the parent has written meanwhile
        value = await store.get("from-parent")
        print(value.decode() if value is not None else "None", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_sqlite_is_shared_by_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"

    async def scenario() -> None:
        async with SqliteStore(path) as store:  # open before the child writes
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert child.stdout is not None and child.stdin is not None
                assert child.stdout.readline() == "flushed\n", child.stderr.read() if child.stderr else ""
                assert await store.get("from-child") == b"child was here"  # the child is still open
                store.put("from-parent", b"parent was here", 60)
                await store.flush()
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline() == "parent was here\n"
                assert child.wait(30) == 0
            finally:
                if child.poll() is None:
                    child.kill()
    run(scenario())


STARTER = """
import asyncio, sys
from fastroute.storage.sqlite import SqliteStore

async def main(path, name):
    async with SqliteStore(path) as store:
        for i in range(200):
            store.put(f"{name}-{i}", name.encode(), 60)

asyncio.run(main(*sys.argv[1:]))
"""


def test_sqlite_workers_starting_together_on_a_new_file(tmp_path: Path) -> None:
    """Four processes create the same new file at once: one schema, and every put of each lands."""
    path = tmp_path / "new" / "dir" / "state.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(path), f"w{n}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM kv").fetchone() == (800,)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(len(MIGRATIONS)),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


WRITE_THEN_EXIT = """
import asyncio, os, sys
from fastroute.storage.sqlite import SqliteStore

async def main(path):
    store = SqliteStore(path)
    await store.start()
    for i in range(1000):
        store.put(f"kept{i}", b"across restarts", 3600)
    store.put("brief", b"gone by then", 0.2)
    await store.close()
    os._exit(0)  # at once: no interpreter shutdown, no thread gets another chance to write

asyncio.run(main(sys.argv[1]))
"""


def test_sqlite_survives_a_restart(tmp_path: Path) -> None:
    """close() writes every queued put; a new process (a restarted server) reads them."""
    path = tmp_path / "state.sqlite3"
    subprocess.run([sys.executable, "-c", WRITE_THEN_EXIT, str(path)], cwd=ROOT, check=True, timeout=60)
    time.sleep(0.3)

    async def restarted() -> None:
        async with SqliteStore(path) as store:
            assert [await store.get(f"kept{i}") for i in range(1000)] == [b"across restarts"] * 1000
            assert await store.get("brief") is None
            store.put("second-run", b"v", 60)

    run(restarted())
    run(restarted())  # and the file is still good after a second close


def test_sqlite_batching_loses_no_put(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    n = 10_000

    async def scenario() -> None:
        async with SqliteStore(path) as store, SqliteStore(path) as other:
            for i in range(n):
                store.put(f"k{i}", b"v%d" % i, 60)
            store.put("k0", b"overwritten", 60)
            await store.flush()
            assert store.dropped == 0
            assert await other.get("k0") == b"overwritten"
            assert [await other.get(f"k{i}") for i in range(1, n)] == [b"v%d" % i for i in range(1, n)]
    run(scenario())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM kv").fetchone() == (n,)
    finally:
        db.close()


def test_sqlite_purges_expired_rows_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"

    def rows() -> set[str]:
        db = sqlite3.connect(path)
        try:
            return {key for (key,) in db.execute("SELECT key FROM kv")}
        finally:
            db.close()

    async def scenario() -> None:
        async with SqliteStore(path, purge_interval_s=0.05) as store:
            for i in range(1200):  # more than one purge chunk
                store.put(f"brief{i}", b"x", 0.1)
            store.put("kept", b"y", 60)
            await store.flush()
            assert len(rows()) == 1201
            deadline = time.monotonic() + 20
            while rows() != {"kept"}:
                assert time.monotonic() < deadline, f"{len(rows())} rows left"
                await asyncio.sleep(0.05)
    run(scenario())


def test_sqlite_read_of_a_busy_file_goes_to_the_reader_thread(tmp_path: Path) -> None:
    """The loop's connection never waits on a lock: a SQLITE_BUSY answer sends the read to the
    thread (which waits).  A busy WAL read cannot be staged from outside while the store holds its
    connections, so the loop's connection is made to answer BUSY once; any other error is a 503."""
    class BusyOnce:
        def __init__(self, conn: sqlite3.Connection, code: int) -> None:
            self.conn, self.code = conn, code

        def execute(self, *args: Any) -> Any:
            if self.code:
                exc = sqlite3.OperationalError("database is locked" if self.code == 5 else "disk I/O error")
                exc.sqlite_errorcode, self.code = self.code, 0
                raise exc
            return self.conn.execute(*args)

    async def scenario() -> None:
        async with SqliteStore(tmp_path / "state.sqlite3") as store:
            store.put("k", b"small value", 60)
            await store.flush()
            real = store._reader
            store._reader = BusyOnce(real, 5)  # type: ignore[assignment]
            assert await store.get("k") == b"small value"
            store._reader = BusyOnce(real, 10)  # type: ignore[assignment]  # SQLITE_IOERR
            with pytest.raises(StorageUnavailable):
                await store.get("k")
            store._reader = real
    run(scenario())


def test_sqlite_schema_is_versioned_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"

    async def create() -> None:
        async with SqliteStore(path):
            pass
    run(create())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
    finally:
        db.close()
    with pytest.raises(StorageError) as info:
        run(SqliteStore(path).start())
    assert f"{path} has schema version 99, written by a newer fastroute" in str(info.value)


def test_sqlite_default_path_and_nothing_opened_before_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = open_store(config_from_dict({}).storage)
    expected = tmp_path / "xdg" / "fastroute" / "state.sqlite3"
    assert store.where == str(expected)
    assert not (tmp_path / "xdg").exists()  # open_store builds, start() opens

    async def scenario() -> None:
        async with store:
            store.put("k", b"v", 60)
    run(scenario())
    assert expected.exists()
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert open_store(config_from_dict({}).storage).where == str(
        tmp_path / "home" / ".local" / "share" / "fastroute" / "state.sqlite3")


def test_sqlite_cannot_open_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as info:
        run(SqliteStore(blocker / "state.sqlite3").start())
    assert str(blocker / "state.sqlite3") in str(info.value)


# ── redis ─────────────────────────────────────────────────────────────────

def test_redis_keys_have_the_prefix_and_the_ttl(redis_server: RedisServer) -> None:
    import redis.asyncio as redis

    async def scenario() -> None:
        async with RedisStore(redis_url(redis_server.port), PASSWORD, "pfx-test:") as store:
            store.put("resp_1", b"body", 30)
            await store.flush()
            raw = redis.from_url(redis_url(redis_server.port), password=PASSWORD)
            try:
                assert await raw.get("pfx-test:resp_1") == b"body"
                assert 0 < await raw.pttl("pfx-test:resp_1") <= 30_000
                assert await raw.get("resp_1") is None
            finally:
                await raw.aclose()
    run(scenario())


def test_redis_wrong_password_is_unavailable_and_never_shown(redis_server: RedisServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.storage")

    async def scenario() -> None:
        async with RedisStore(redis_url(redis_server.port), PASSWORD + "-wrong") as store:
            with pytest.raises(StorageUnavailable) as info:
                await store.get("k")
            assert PASSWORD not in str(info.value)
            store.put("k", b"v", 60)
            assert await store.get("k") == b"v"  # its own put, still queued
    run(scenario())
    assert f"cannot reach redis://127.0.0.1:{redis_server.port}/0" in caplog.text
    assert PASSWORD not in caplog.text


def test_redis_down_then_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.storage")
    port = free_port()
    url = redis_url(port)
    server: RedisServer | None = None

    async def scenario() -> None:
        nonlocal server
        async with RedisStore(url, PASSWORD, "down-test:") as store:
            store.put("before", b"queued while down", 60)
            assert await store.get("before") == b"queued while down"  # its own put, from the queue
            with pytest.raises(StorageUnavailable):
                await store.get("other")
            with pytest.raises(StorageUnavailable):
                await store.flush()
            store.put("also-before", b"queued too", 60)
            server = RedisServer(port, PASSWORD)
            deadline = time.monotonic() + 30
            while True:  # the store finds it by itself
                try:
                    await store.flush()
                    break
                except StorageUnavailable:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.1)
            store.put("after", b"put once it was back", 60)
            await store.flush()
            async with RedisStore(url, PASSWORD, "down-test:") as other:
                assert await other.get("before") == b"queued while down"
                assert await other.get("also-before") == b"queued too"
                assert await other.get("after") == b"put once it was back"

    try:
        run(scenario())
    finally:
        if server is not None:
            server.stop()
    assert caplog.text.count(f"cannot reach redis://127.0.0.1:{port}/0") == 1  # said once, not at every retry
    assert f"redis://127.0.0.1:{port}/0 is back" in caplog.text
    assert PASSWORD not in caplog.text


def test_redis_that_refuses_writes_keeps_the_puts_and_serves_reads(redis_server: RedisServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Out of memory (maxmemory, noeviction): SET fails, GET works; the puts wait and land once it has room."""
    import redis.asyncio as redis

    caplog.set_level(logging.WARNING, logger="fastroute.storage")
    url = redis_url(redis_server.port)

    async def scenario() -> None:
        raw = redis.from_url(url, password=PASSWORD)
        async with RedisStore(url, PASSWORD, "oom-test:") as store:
            store.put("there", b"before", 60)
            await store.flush()
            await raw.config_resetstat()
            await raw.config_set("maxmemory-policy", "noeviction")
            await raw.config_set("maxmemory", "1")
            try:
                store.put("later", b"while full", 60)
                with pytest.raises(StorageUnavailable):
                    await store.flush()
                async with RedisStore(url, PASSWORD, "oom-test:") as other:
                    assert await other.get("there") == b"before"  # reads go on
                    assert await other.get("later") is None
                assert await store.get("later") == b"while full"  # its own, still queued
                await asyncio.sleep(1.0)
                stats = (await raw.info("commandstats")).get("cmdstat_set", {})
                assert 1 <= stats.get("rejected_calls", 0) <= 10  # retried with a backoff, not in a hot loop
            finally:
                await raw.config_set("maxmemory", "0")
            deadline = time.monotonic() + 30
            while True:
                try:
                    await store.flush()
                    break
                except StorageUnavailable:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.1)
            async with RedisStore(url, PASSWORD, "oom-test:") as other:
                assert await other.get("later") == b"while full"
        await raw.aclose()

    run(scenario())
    assert caplog.text.count("refuses the puts (OutOfMemoryError") == 1
    assert "takes the puts again" in caplog.text and "cannot reach" not in caplog.text


def test_redis_puts_beyond_the_queue_bound_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.storage")
    port = free_port()
    url = redis_url(port)
    server: RedisServer | None = None

    async def scenario() -> None:
        nonlocal server
        async with RedisStore(url, PASSWORD, "bound-test:", max_queued=5) as store:
            for i in range(8):
                store.put(f"k{i}", b"v", 60)
            assert store.dropped == 3
            assert caplog.text.count("is full; dropping puts") == 1
            server = RedisServer(port, PASSWORD)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await store.flush()
                    break
                except StorageUnavailable:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.1)
            store.put("k8", b"v", 60)  # room again: the count is said
            assert f"3 put(s) for {url} dropped while the queue was full" in caplog.text
            await store.flush()
            async with RedisStore(url, PASSWORD, "bound-test:") as other:
                kept = [await other.get(f"k{i}") is not None for i in range(9)]
            assert kept == [True] * 5 + [False] * 3 + [True]

    try:
        run(scenario())
    finally:
        if server is not None:
            server.stop()


def test_open_store_connects_to_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fastroute.storage")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    store = open_store(storage_config({"kind": "redis", "redis_url": redis_url(free_port()),
                                       "redis_password_env": PASSWORD_ENV}))
    assert isinstance(store, RedisStore) and caplog.text == ""


def test_importing_storage_is_light() -> None:
    code = ("import sys, fastroute.storage, fastroute.config;"
            "print(','.join(m for m in ('redis', 'sqlite3', 'fastroute.storage.sqlite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


# ── [storage] config ──────────────────────────────────────────────────────

def test_storage_config_defaults_and_kinds() -> None:
    s = config_from_dict({}).storage
    assert (s.kind, s.path, s.memory_max_bytes, s.redis_url, s.redis_password_env, s.key_prefix) == \
        ("sqlite", None, 64 * 1024 * 1024, None, None, "fastroute:")
    assert isinstance(open_store(storage_config({"kind": "memory", "memory_max_bytes": 1024})), MemoryStore)
    assert isinstance(open_store(storage_config({"path": "/tmp/x/state.sqlite3"})), SqliteStore)
    r = storage_config({"kind": "redis", "redis_url": "rediss://cache.internal:6380/2", "key_prefix": "fr:"})
    store = open_store(r)
    assert isinstance(store, RedisStore) and store.where == "rediss://cache.internal:6380/2"


@pytest.mark.parametrize(("storage", "error"), [
    ({"kind": "postgres"}, "storage.kind: must be one of sqlite, memory, redis, got 'postgres'"),
    ({"kind": 1}, "storage.kind: expected a string, got integer 1"),
    ({"knd": "memory"}, "storage.knd: unknown key (did you mean 'kind'?)"),
    ({"path": ""}, "storage.path: must not be empty"),
    ({"path": 3}, "storage.path: expected a string, got integer 3"),
    ({"memory_max_bytes": 0}, "storage.memory_max_bytes: must be positive, got 0"),
    ({"memory_max_bytes": "64MiB"}, "storage.memory_max_bytes: expected an integer"),
    ({"kind": "redis"}, 'storage.redis_url: required with kind = "redis"'),
    ({"kind": "redis", "redis_url": "http://127.0.0.1:6379"},
     "storage.redis_url: must be a redis://, rediss:// or unix:// URL"),
    ({"kind": "redis", "redis_url": "redis://user:secret@127.0.0.1:6379/0"},
     "storage.redis_url: must not hold a password: name an env var in storage.redis_password_env"),
    ({"kind": "redis", "redis_url": "redis://127.0.0.1:6379/0?password=secret"}, "must not hold a password"),
    ({"kind": "redis", "redis_url": "unix://:secret@/run/redis.sock"}, "must not hold a password"),
    ({"redis_url": "redis://127.0.0.1:6379/0"}, 'storage.redis_url: only used with kind = "redis"'),
    ({"kind": "memory", "redis_password_env": "X"}, 'storage.redis_password_env: only used with kind = "redis"'),
    ({"key_prefix": 5}, "storage.key_prefix: expected a string"),
])
def test_storage_config_errors(storage: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"storage": storage})
    assert error in str(info.value) and "secret" not in str(info.value)


def test_events_url_with_a_password_in_the_query_is_refused_too() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"events": {"redis_url": "redis://127.0.0.1:6379/0?password=secret"}})
    assert "events.redis_url: must not hold a password" in str(info.value) and "secret" not in str(info.value)


def test_require_env_checks_the_storage_password(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_from_dict({"storage": {"kind": "redis", "redis_url": "redis://127.0.0.1:6379/0",
                                        "redis_password_env": "FR_TEST_STORAGE_PW_UNSET"}})
    monkeypatch.delenv("FR_TEST_STORAGE_PW_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        require_env(cfg)
    assert "storage.redis_password_env: $FR_TEST_STORAGE_PW_UNSET is not set; Redis would refuse the storage" \
        in str(info.value)
    monkeypatch.setenv("FR_TEST_STORAGE_PW_UNSET", "pw")
    require_env(cfg)


def test_check_warns_about_an_unset_storage_password(tmp_path: Path) -> None:
    conf = tmp_path / "storage.toml"
    conf.write_text('[storage]\nkind = "redis"\nredis_url = "redis://127.0.0.1:6379/0"\n'
                    'redis_password_env = "FR_TEST_STORAGE_PW_UNSET"\n')
    out = subprocess.run([sys.executable, "-m", "fastroute", "check", str(conf)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and f"{conf}: ok" in out.stdout
    assert "warning: storage.redis_password_env: $FR_TEST_STORAGE_PW_UNSET is not set" in out.stdout
