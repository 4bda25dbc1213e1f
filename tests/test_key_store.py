"""The admin API's key stores, each kind on its real backend (a SQLite file under the test's tmp
directory, a real redis-server): create / update / delete with their refusals, a change seen by
another store on the same backend (another worker, another instance), and Redis away and back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastroute.config import config_from_dict
from fastroute.governance.key_store import (
    KeyExists,
    KeyMissing,
    KeyStore,
    MemoryKeyStore,
    RedisKeyStore,
    SqliteKeyStore,
)
from fastroute.governance.keys import KeyRing
from fastroute.storage.base import StorageUnavailable
from tests.conftest import free_port
from tests.redis_server import PASSWORD, RedisServer, redis_url

PASSWORD_ENV = "FR_TEST_KEYSTORE_REDIS_PASSWORD"
SHA = "ab" * 32
KINDS = ["memory", "sqlite", "redis"]


def entry(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "key_sha256": SHA, "models": ["*"], "created_ms": 1, "updated_ms": 1, **fields}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], KeyStore]:
    """Stores of one kind on one backend: two of them are two workers (or instances) sharing it."""
    if request.param == "memory":
        store = MemoryKeyStore()
        return lambda: store  # a process's own: "another worker" is the same store
    if request.param == "sqlite":
        return lambda: SqliteKeyStore(tmp_path / "keys.sqlite3")
    server = request.getfixturevalue("redis_server")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    prefix = f"ks-{request.node.name}-{time.monotonic_ns()}:"
    return lambda: RedisKeyStore(redis_url(server.port), PASSWORD_ENV, prefix, poll_s=0.2)


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


def test_create_update_delete_and_their_refusals(make: Callable[[], KeyStore]) -> None:
    async def go() -> None:
        async with make() as store:
            assert await store.load() == []
            assert not store.changed()
            await store.put(entry("a"), create=True)
            with pytest.raises(KeyExists):
                await store.put(entry("a"), create=True)
            with pytest.raises(KeyMissing):
                await store.put(entry("b"), create=False)
            await store.put(entry("a", models=["gpt-*"]), create=False)
            await store.put(entry("b:c d*é"), create=True)  # names are data, whatever they hold
            assert store.changed()
            loaded = await store.load()
            assert [(e["name"], e["models"]) for e in loaded] == [("a", ["gpt-*"]), ("b:c d*é", ["*"])]
            assert not store.changed()
            await store.delete("a")
            with pytest.raises(KeyMissing):
                await store.delete("a")
            assert [e["name"] for e in await store.load()] == ["b:c d*é"]

    run(go())


def test_a_change_made_through_one_store_is_seen_by_another(make: Callable[[], KeyStore]) -> None:
    async def go() -> None:
        async with make() as writer:
            reader = make()
            if reader is writer:
                pytest.skip("the memory store is one worker's own (documented)")
            async with reader:
                await reader.load()
                assert not reader.changed()
                await writer.put(entry("new"), create=True)
                await until(reader.changed)  # SQLite: on the next look; Redis: one message later
                assert [e["name"] for e in await reader.load()] == ["new"]
                assert not reader.changed()
                await writer.delete("new")
                await until(reader.changed)
                assert await reader.load() == []

    run(go())


def test_sqlite_sees_a_change_from_another_process_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = tmp_path / "keys.sqlite3"

    async def go() -> None:
        async with SqliteKeyStore(path) as store:
            await store.load()
            code = ("import asyncio; from fastroute.governance.key_store import SqliteKeyStore\n"
                    "async def main():\n"
                    f"    async with SqliteKeyStore({str(path)!r}) as s:\n"
                    f"        await s.put({entry('other')!r}, create=True)\n"
                    "asyncio.run(main())\n")
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
            assert store.changed()  # no wait: the other process set the version before it exited
            assert [e["name"] for e in await store.load()] == ["other"]

    run(go())


def test_a_ring_with_a_store_requires_a_key_and_follows_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import hashlib

    secret = "fr-ring-test-secret"

    async def go() -> None:
        async with SqliteKeyStore(tmp_path / "keys.sqlite3") as store:
            ring = KeyRing.from_config(config_from_dict({}), {}, store=store)
            assert ring.required and await ring.lookup(secret) is None  # none yet: still closed
            await store.put(entry("k", key_sha256=hashlib.sha256(secret.encode()).hexdigest(),
                                  rate_limit={"requests_per_minute": 5}), create=True)
            key = await ring.lookup(secret)
            assert key is not None and key.name == "k" and key.limits.requests_per_minute == 5
            assert ring.limited and key.stored is not None
            await store.put(entry("bad", models=[]), create=True)  # not a valid key: skipped, said
            assert (await ring.lookup(secret)).name == "k"  # the reload it caused keeps the good one
            assert ring.get("bad") is None
            assert "key 'bad' in" in caplog.text and "models: must name at least one model glob" in caplog.text
            await store.delete("k")
            assert await ring.lookup(secret) is None and ring.required

    run(go())


def test_redis_away_keeps_the_last_keys_and_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import hashlib

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    port = free_port()
    server = RedisServer(port, PASSWORD, aof_dir=tmp_path)
    secret = "fr-redis-away-secret"
    caplog.set_level(logging.WARNING, "fastroute.governance")

    async def go() -> None:
        nonlocal server
        async with RedisKeyStore(redis_url(port), PASSWORD_ENV, "away:", poll_s=0.1) as store:
            ring = KeyRing.from_config(config_from_dict({}), {}, store=store)
            await store.put(entry("k", key_sha256=hashlib.sha256(secret.encode()).hexdigest()), create=True)
            assert (await ring.lookup(secret)).name == "k"
            server.kill()
            for _ in range(20):  # served from the keys loaded, without waiting on Redis
                assert (await ring.lookup(secret)).name == "k"
                assert await ring.lookup("fr-unknown") is None
            with pytest.raises(StorageUnavailable):
                await store.put(entry("later"), create=True)
            await until(lambda: "keys: cannot reach" in caplog.text)
            await asyncio.sleep(0.5)  # the task keeps trying meanwhile: said once
            assert caplog.text.count("keys: cannot reach") == 1
            server = RedisServer(port, PASSWORD, aof_dir=tmp_path)  # back, with its append-only file
            await until(store.changed, 10)
            assert (await ring.lookup(secret)).name == "k"
            assert caplog.text.count("is back; keys loaded again") == 1
            assert PASSWORD not in caplog.text and PASSWORD not in store.where and PASSWORD not in repr(store)

    try:
        run(go())
    finally:
        server.kill()
