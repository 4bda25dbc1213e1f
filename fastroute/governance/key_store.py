"""The keys the admin API creates (``POST /v1/admin/keys``), kept where every worker and instance
sees them: one interface (:class:`KeyStore`), three kinds, chosen by ``[storage] kind``.

An entry is a key as ``[[keys]]`` holds it — ``name``, ``key_sha256``, ``models``,
``rate_limit``, ``budget``, ``metadata`` — plus ``created_ms`` and ``updated_ms``; never a
secret (the API hands the secret out once and keeps its SHA-256).  Every worker holds all the
entries in memory (:class:`~fastroute.governance.keys.KeyRing`); the request path asks the store
only :meth:`KeyStore.changed`, which costs an attribute read or a few bytes of shared memory:

- :class:`MemoryKeyStore`: this process's dict (one worker, tests).  Seen at once.
- :class:`SqliteKeyStore`: ``keys.sqlite3`` beside the state file, shared by the workers of
  one machine, and ``keys.version``, eight bytes every process maps into memory: a writer sets
  them to the new version after it commits, so every worker sees a change on its next
  request, at the price of comparing eight bytes.  The entries are read again then, in a
  thread.
- :class:`RedisKeyStore`: the hash ``{prefix}keys`` (name -> entry), its version
  ``{prefix}keys:version``, written together by one Lua script that also publishes the version
  on ``{prefix}keys:changed``.  Every instance subscribes: a change reaches the others within a
  Redis round trip (a key used in that moment is judged by the entries before it).  A key
  nobody here knows makes the instance ask Redis for the version first (at most every 50 ms),
  so a key created elsewhere works at once.  A task compares the version every 2 s, in case a
  message was lost.  Redis away: the last entries loaded keep serving (said once in the log),
  the task tries again, and says so once when Redis is back.

Writes (the admin API) are awaited and may raise :class:`KeyExists`, :class:`KeyMissing`, or
:class:`~fastroute.storage.base.StorageUnavailable` when the backend cannot be written now.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import mmap
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fastroute.storage.base import Backed, StorageError, StorageUnavailable

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("fastroute.governance")

#: seconds between the Redis store's checks of the version (a lost message, Redis back)
POLL_S = 2.0
#: seconds at least between two version checks for an unknown key (Redis)
MISS_CHECK_S = 0.05


class KeyExists(Exception):
    """A key of that name is there already."""


class KeyMissing(Exception):
    """No key of that name."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyStore(Backed, abc.ABC):
    """Stored key entries by name.  Nothing is opened until :meth:`start`, on the worker's loop."""

    #: for log lines: ``memory``, a path, or ``redis://host:port/db`` — never a password
    where: str

    async def start(self) -> None:
        """Open files and connections, on the running loop."""

    async def close(self) -> None:
        """Release everything."""

    @abc.abstractmethod
    def changed(self) -> bool:
        """May the entries differ from what :meth:`load` last returned?  Cheap: on every request."""

    async def refresh(self) -> bool:
        """For a key nobody here knows: ask the backend whether anything changed (True), when
        :meth:`changed` may not have heard yet.  Exact stores need not ask."""
        return False

    @abc.abstractmethod
    async def load(self) -> list[dict[str, Any]]:
        """Every entry, and :meth:`changed` False until the next change."""

    @abc.abstractmethod
    async def put(self, entry: dict[str, Any], *, create: bool) -> None:
        """Write ``entry`` under its name: a new one (KeyExists when taken), or over one (KeyMissing when not)."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the entry (KeyMissing when there is none)."""


# ── memory ────────────────────────────────────────────────────────────────

class MemoryKeyStore(KeyStore):
    def __init__(self) -> None:
        self.where = "memory (this worker's own)"
        self._entries: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._seen = 0

    def changed(self) -> bool:
        return self._version != self._seen

    async def load(self) -> list[dict[str, Any]]:
        self._seen = self._version
        return [dict(e) for e in self._entries.values()]

    async def put(self, entry: dict[str, Any], *, create: bool) -> None:
        name = entry["name"]
        if create and name in self._entries:
            raise KeyExists(name)
        if not create and name not in self._entries:
            raise KeyMissing(name)
        self._entries[name] = dict(entry)
        self._version += 1

    async def delete(self, name: str) -> None:
        if self._entries.pop(name, None) is None:
            raise KeyMissing(name)
        self._version += 1


# ── sqlite ────────────────────────────────────────────────────────────────

_SCHEMA = ("CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, entry BLOB NOT NULL) WITHOUT ROWID",
           "CREATE TABLE IF NOT EXISTS keys_version (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL)",
           "INSERT OR IGNORE INTO keys_version (id, version) VALUES (0, 0)")


class SqliteKeyStore(KeyStore):
    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(os.path.abspath(os.path.expanduser(path)))
        self.where = str(self.path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._mm: mmap.mmap | None = None
        self._seen = b""

    async def start(self) -> None:
        if self._conn is not None:
            raise StorageError(f"keys: {self.where} is already started")
        self._conn, self._mm = await asyncio.to_thread(self._open)

    async def close(self) -> None:
        conn, mm = self._conn, self._mm
        self._conn = self._mm = None
        if conn is not None:
            conn.close()
        if mm is not None:
            mm.close()

    def _open(self) -> tuple[sqlite3.Connection, mmap.mmap]:
        from fastroute.storage.sqlite_file import open_wal

        conn = open_wal(self.path, "keys", self.busy_timeout_s, self._migrate)
        version_file = self.path.with_name(self.path.stem + ".version")
        try:
            fd = os.open(version_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)  # zeros: every process that maps it agrees
                mm = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        except OSError as exc:
            conn.close()
            raise StorageError(f"keys: cannot use {version_file}: {exc}") from exc
        return conn, mm

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in _SCHEMA:
                conn.execute(sql)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def changed(self) -> bool:
        mm = self._mm
        return mm is not None and mm[:8] != self._seen

    async def load(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._locked, self._load)

    async def put(self, entry: dict[str, Any], *, create: bool) -> None:
        await asyncio.to_thread(self._locked, self._write, entry["name"], orjson.dumps(entry), create)

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._locked, self._write, name, None, False)

    def _locked(self, action: Any, *args: Any) -> Any:
        conn = self._conn
        if conn is None:
            raise StorageError(f"keys: {self.where} is not started (or closed)")
        import sqlite3

        with self._lock:
            try:
                return action(conn, *args)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageUnavailable(f"keys: cannot use {self.where}: {exc}") from exc

    def _load(self, conn: sqlite3.Connection) -> list[dict[str, Any]]:
        assert self._mm is not None
        seen = self._mm[:8]  # before reading: a change committed meanwhile is seen next time
        rows = conn.execute("SELECT entry FROM keys ORDER BY name").fetchall()
        self._seen = seen
        return [orjson.loads(row[0]) for row in rows]

    def _write(self, conn: sqlite3.Connection, name: str, data: bytes | None, create: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        there = conn.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone() is not None
        if create and there:
            conn.execute("ROLLBACK")
            raise KeyExists(name)
        if not create and not there:
            conn.execute("ROLLBACK")
            raise KeyMissing(name)
        if data is None:
            conn.execute("DELETE FROM keys WHERE name = ?", (name,))
        else:
            conn.execute("INSERT OR REPLACE INTO keys (name, entry) VALUES (?, ?)", (name, data))
        version = conn.execute("UPDATE keys_version SET version = version + 1 WHERE id = 0 RETURNING version"
                               ).fetchone()[0]
        conn.execute("COMMIT")
        assert self._mm is not None
        self._mm[:8] = int(version).to_bytes(8, "little")  # after the commit: whoever sees it reads the change


# ── redis ─────────────────────────────────────────────────────────────────

#: KEYS: the hash, the version, the channel; ARGV: name, entry ('' to delete), mode (create|update|delete)
WRITE_LUA = """
local there = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if ARGV[3] == 'create' and there then return 'exists' end
if ARGV[3] ~= 'create' and not there then return 'missing' end
if ARGV[3] == 'delete' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], version)
return 'ok'
"""


class RedisKeyStore(KeyStore):
    def __init__(self, url: str, password_env: str | None = None, key_prefix: str = "fastroute:", *,
                 timeout_s: float = 1.0, poll_s: float = POLL_S) -> None:
        from fastroute.storage.redis import where

        self.url = url
        self.where = where(url)
        self.password_env = password_env
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._hash = f"{key_prefix}keys"
        self._version_key = f"{key_prefix}keys:version"
        self._channel = f"{key_prefix}keys:changed"
        self._client: Any = None
        self._write: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stale = True
        self._seen: bytes | None = None
        self._checked = 0.0
        self._down = False

    async def start(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        password = os.environ.get(self.password_env) if self.password_env else None
        self._client = redis.from_url(self.url, password=password, socket_connect_timeout=self.timeout_s,
                                      socket_timeout=self.timeout_s, retry=Retry(NoBackoff(), 1))
        self._write = self._client.register_script(WRITE_LUA)
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="fastroute-keys-follow")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to save
                await client.aclose()

    def changed(self) -> bool:
        return self._stale

    async def refresh(self) -> bool:
        now = time.monotonic()
        if self._down or now - self._checked < MISS_CHECK_S:
            return False
        self._checked = now
        try:
            version = await self._ready().get(self._version_key)
        except _redis_errors() as exc:
            self._went_down(exc)
            return False
        return version != self._seen

    async def load(self) -> list[dict[str, Any]]:
        client = self._ready()
        try:
            async with client.pipeline(transaction=True) as pipe:
                version, entries = await pipe.get(self._version_key).hgetall(self._hash).execute()
        except _redis_errors() as exc:
            self._went_down(exc)
            raise StorageUnavailable(f"keys: cannot reach {self.where} ({type(exc).__name__})") from exc
        self._seen = version
        self._stale = False
        self._back()
        return [orjson.loads(v) for _, v in sorted(entries.items())]

    async def put(self, entry: dict[str, Any], *, create: bool) -> None:
        await self._run(entry["name"], orjson.dumps(entry), "create" if create else "update")

    async def delete(self, name: str) -> None:
        await self._run(name, b"", "delete")

    async def _run(self, name: str, data: bytes, mode: str) -> None:
        self._ready()
        try:
            answer = await self._write(keys=(self._hash, self._version_key, self._channel), args=(name, data, mode))
        except _redis_errors() as exc:
            self._went_down(exc)
            raise StorageUnavailable(f"keys: cannot write to {self.where} ({type(exc).__name__})") from exc
        answer = answer.decode() if isinstance(answer, bytes) else answer
        if answer == "exists":
            raise KeyExists(name)
        if answer == "missing":
            raise KeyMissing(name)
        self._stale = True  # this instance reads its own change at once

    def _ready(self) -> Any:
        if self._client is None:
            raise StorageError(f"keys: {self.where} is not started (or closed)")
        return self._client

    def _went_down(self, exc: BaseException) -> None:
        self._stale = False  # no request waits on Redis again: the task tries it
        if not self._down:
            self._down = True
            log.warning("keys: cannot reach %s (%s); serving the keys last loaded until it is back",
                        self.where, type(exc).__name__)

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.warning("keys: %s is back; keys loaded again", self.where)

    async def _follow(self) -> None:
        """Subscribe to the changes; every ``poll_s`` (and after a lost subscription) compare the version."""
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self._channel)
                    self._stale = True  # anything may have changed while we were not listening
                message = await pubsub.get_message(timeout=self.poll_s)
                if message is not None:
                    if message.get("data") != self._seen:
                        self._stale = True
                    continue
                version = await self._client.get(self._version_key)
                if version != self._seen or self._down:
                    self._stale = True
            except asyncio.CancelledError:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                raise
            except _redis_errors() as exc:
                self._went_down(exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    pubsub = None
                await asyncio.sleep(self.poll_s)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from fastroute.governance.counters import _redis_errors as errors

    return errors()
