"""The embedded store: one SQLite file shared by the workers of one machine.

WAL mode (readers never wait for the writer), ``synchronous = NORMAL`` (a
commit does not fsync; a power cut may lose the last commits, never the file),
a busy timeout for the writers of the other workers.  Each worker has:

- one writer thread: a put lands in a queue (and in :class:`~.base.Pending`,
  so the worker reads it at once); the thread takes whatever has queued up
  while it committed the last batch (up to ``BATCH_MAX`` operations) and
  commits it in one transaction — no waiting for a batch to fill, so a put is
  visible to the other workers within a commit or two (measured: a put then
  ``flush()``, 0.4 ms median, a few ms at p99).  A put overwritten or deleted
  before its turn is skipped.  Every ``purge_interval_s`` the same thread
  deletes expired rows, a few hundred per transaction.
- reads on the event loop, chosen by measurement (``storage-sqlite-read`` in
  ``benchmarks/test_bench_storage.py``; Python 3.11, SQLite 3.40, uvloop,
  2 cores, the file in the page cache), µs per read, on the loop directly /
  through ``asyncio.to_thread``, the range of four runs (the thread figures
  swing most with the machine's load):

      value     direct    to_thread
      100 B      4–9        44–124
      4 KiB      6–10       44–147
      64 KiB    29–43       95–450
      256 KiB   89–133     220–730
      1 MiB    590–1,250   570–870

  The hop to a thread and back (40–120 µs) dwarfs the read of a small row;
  for a large value the costs meet, and on the loop that time is taken from
  every other request.  So the loop reads each key once, asking SQLite for
  the value's length (free: the small columns come before the blob, and
  SQLite knows a blob's length without reading it) and for the value only
  when it is at most ``DIRECT_MAX`` (64 KiB); a larger value is read again by
  the store's reader thread.  A read holds the loop for ~40 µs at most.  The
  loop's connection never waits on a lock (busy timeout 0); when the file is
  busy (another process recovering it, rare in WAL mode) the read goes to the
  thread, which waits.

Expiry is wall-clock time (``time.time()``, shared by processes); an expired
row is never returned.  The schema is versioned in ``meta`` (``schema_version``):
later tables are new entries of ``MIGRATIONS``, applied once, in order, by
whichever worker starts first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fastroute.storage.sqlite_file import open_wal
from fastroute.storage.base import Drops, Entry, Pending, StorageError, StorageUnavailable, Store, admit

log = logging.getLogger("fastroute.storage")

#: each migration's statements; the schema's version is the number applied
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: keys with a time to live; the small columns first, so filtering never reads the blob
        "CREATE TABLE kv (key TEXT PRIMARY KEY, expires_at REAL NOT NULL, value BLOB NOT NULL)",
        "CREATE INDEX kv_expires_at ON kv (expires_at)",
    ),
)

#: values up to this many bytes are read on the event loop; larger ones by the reader thread
DIRECT_MAX = 64 * 1024
#: operations committed in one transaction at most
BATCH_MAX = 1000
#: seconds a writer waits for another process's write lock
BUSY_TIMEOUT_S = 5.0
#: puts queued and not yet written, at most (beyond: dropped, with a warning)
MAX_QUEUED = 100_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: expired rows deleted per transaction while purging
PURGE_CHUNK = 500
SQLITE_BUSY = 5

_SELECT = ("SELECT length(value), CASE WHEN length(value) <= ? THEN value END FROM kv "
           "WHERE key = ? AND expires_at > ?")
_SELECT_VALUE = "SELECT value FROM kv WHERE key = ? AND expires_at > ?"
_UPSERT = ("INSERT INTO kv (key, expires_at, value) VALUES (?, ?, ?) "
           "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, value = excluded.value")
_PURGE = f"DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE expires_at <= ? LIMIT {PURGE_CHUNK})"


def default_path(environ: Any = os.environ) -> Path:
    """``$XDG_DATA_HOME/fastroute/state.sqlite3``, else ``~/.local/share/fastroute/state.sqlite3``."""
    base = environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "fastroute" / "state.sqlite3"


class _Delete:
    __slots__ = ("key", "was_pending", "future")

    def __init__(self, key: str, was_pending: bool) -> None:
        self.key = key
        self.was_pending = was_pending
        self.future: concurrent.futures.Future[bool] = concurrent.futures.Future()


_STOP = object()


class SqliteStore(Store):
    def __init__(self, path: str | os.PathLike[str] | None = None, *, purge_interval_s: float = 60.0,
                 max_queued: int = MAX_QUEUED, max_queued_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.path = Path(os.path.abspath(os.path.expanduser(path))) if path is not None else default_path()
        self.where = str(self.path)
        self.purge_interval_s = purge_interval_s
        self.max_queued = max_queued
        self._pending = Pending(max_queued_bytes)
        self._drops = Drops(log, self.where)
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader: sqlite3.Connection | None = None
        self._big: concurrent.futures.ThreadPoolExecutor | None = None
        self._big_conn: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        """Puts dropped because the queue was full."""
        return self._drops.total

    # ── the event loop's side ───────────────────────────────────────────────

    async def start(self) -> None:
        conn = await asyncio.to_thread(self._open)
        self._writer = threading.Thread(target=self._write, args=(conn,), name="fastroute-storage-writer",
                                        daemon=True)
        self._writer.start()
        self._reader = self._connect(timeout=0)
        self._reader.execute("PRAGMA query_only = 1")
        self._big = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastroute-storage-reader")
        await asyncio.get_running_loop().run_in_executor(self._big, self._open_big)

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        full = self._closed or self._ops.qsize() >= self.max_queued
        entry = admit(self._pending, self._drops, key, value, ttl_s, full)
        if entry is not None:
            self._ops.put((key, entry))

    async def get(self, key: str) -> bytes | None:
        entry = self._pending.get(key)
        if entry is not None:
            return entry[0] if entry[1] > time.time() else None
        if self._reader is None:
            raise self._not_open()
        try:
            row = self._reader.execute(_SELECT, (DIRECT_MAX, key, time.time())).fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != SQLITE_BUSY:
                raise StorageUnavailable(f"storage: cannot read {self.where}: {exc}") from exc
            row = (DIRECT_MAX + 1, None)  # locked for a moment: the reader thread waits for it
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"storage: cannot read {self.where}: {exc}") from exc
        if row is None:
            return None
        if row[0] <= DIRECT_MAX:
            return row[1]
        assert self._big is not None
        return await asyncio.get_running_loop().run_in_executor(self._big, self._read_big, key)

    async def delete(self, key: str) -> bool:
        if self._writer is None or self._closed:
            raise self._not_open()
        op = _Delete(key, self._pending.drop(key))
        self._ops.put(op)
        return await asyncio.wrap_future(op.future)

    async def flush(self) -> None:
        if self._writer is None:
            raise self._not_open()
        if not self._writer.is_alive():
            return  # closed: everything was written then
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ops.put(done)
        await asyncio.wrap_future(done)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._ops.put(_STOP)  # after every queued put: they are written first
            await asyncio.to_thread(self._writer.join)
        if self._big is not None:
            await asyncio.get_running_loop().run_in_executor(self._big, self._close_big)
            self._big.shutdown()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _not_open(self) -> StorageError:
        return StorageError(f"storage: {self.where} is {'closed' if self._closed else 'not started'}")

    # ── opening ─────────────────────────────────────────────────────────────

    def _connect(self, timeout: float) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"storage: cannot open {self.where}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        """The writer's connection, the file created, in WAL mode and at the current schema."""
        return open_wal(self.path, "storage", BUSY_TIMEOUT_S, self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise StorageError(f"storage: {self.where} has schema version {version}, written by a newer "
                                   f"fastroute (this one knows up to {len(MIGRATIONS)})")
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(len(MIGRATIONS)),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ── the reader thread (large values, and reads while the file is busy) ──

    def _open_big(self) -> None:
        self._big_conn = self._connect(BUSY_TIMEOUT_S)

    def _read_big(self, key: str) -> bytes | None:
        assert self._big_conn is not None
        try:
            row = self._big_conn.execute(_SELECT_VALUE, (key, time.time())).fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"storage: cannot read {self.where}: {exc}") from exc
        return row[0] if row else None

    def _close_big(self) -> None:
        if self._big_conn is not None:
            self._big_conn.close()

    # ── the writer thread ───────────────────────────────────────────────────

    def _write(self, conn: sqlite3.Connection) -> None:
        carry: list[Any] = []  # the puts of a batch that failed: first in the next one
        pause = 0.05
        failing = False
        next_purge = time.monotonic() + self.purge_interval_s
        try:
            while True:
                if time.monotonic() >= next_purge:
                    self._purge(conn)
                    next_purge = time.monotonic() + self.purge_interval_s
                batch = carry
                if not batch:
                    try:
                        batch = [self._ops.get(timeout=max(0.0, next_purge - time.monotonic()))]
                    except queue.Empty:
                        continue
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(self._ops.get_nowait())
                    except queue.Empty:
                        break
                try:
                    stop = self._commit(conn, batch)
                except sqlite3.Error as exc:
                    carry = self._failed(batch, exc)
                    if not failing:
                        log.warning("storage: cannot write to %s (%s); puts wait in memory and are tried again",
                                    self.where, exc)
                        failing = True
                    if _STOP in carry:
                        lost = sum(1 for op in carry if type(op) is tuple)
                        log.warning("storage: closing with %d put(s) not written to %s", lost, self.where)
                        return
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                except Exception as exc:  # a bug, not the file: this batch is lost, the writer goes on
                    log.exception("storage: a batch for %s could not be written", self.where)
                    self._failed(batch, exc)
                    self._forget(batch)
                    stop = _STOP in batch
                carry = []
                if failing:
                    log.warning("storage: writing to %s again", self.where)
                    failing, pause = False, 0.05
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> bool:
        """Write one batch in one transaction; resolve its waiters. True when it held the stop mark."""
        pending = self._pending
        now = time.time()
        rows: list[tuple[str, float, bytes]] = []
        settled: list[tuple[str, Entry]] = []
        answers: list[tuple[concurrent.futures.Future[Any], Any]] = []
        stop = False
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                if type(op) is tuple:
                    key, entry = op
                    if pending.is_current(key, entry):
                        settled.append(op)
                        if entry[1] > now:
                            rows.append((key, entry[1], entry[0]))
                elif type(op) is _Delete:
                    if rows:
                        conn.executemany(_UPSERT, rows)
                        rows = []
                    found = conn.execute("SELECT expires_at FROM kv WHERE key = ?", (op.key,)).fetchone()
                    conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                    answers.append((op.future, op.was_pending or (found is not None and found[0] > now)))
                elif op is _STOP:
                    stop = True
                else:
                    answers.append((op, None))  # a flush: done once this commits
            if rows:
                conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for key, entry in settled:
            pending.settle(key, entry)
        for future, result in answers:
            future.set_result(result)
        return stop

    def _forget(self, batch: list[Any]) -> None:
        for op in batch:
            if type(op) is tuple:
                self._pending.settle(*op)

    def _failed(self, batch: list[Any], exc: Exception) -> list[Any]:
        """Tell the waiters of a failed batch; the puts (and the stop mark) to try again."""
        keep = []
        for op in batch:
            if type(op) is tuple or op is _STOP:
                keep.append(op)
            else:
                future = op.future if type(op) is _Delete else op
                future.set_exception(StorageUnavailable(f"storage: cannot write to {self.where}: {exc}"))
        return keep

    def _purge(self, conn: sqlite3.Connection) -> None:
        """Delete expired rows, a chunk per transaction (other workers' writers get their turn)."""
        try:
            while conn.execute(_PURGE, (time.time(),)).rowcount == PURGE_CHUNK:
                pass
        except sqlite3.Error as exc:
            log.warning("storage: could not purge expired rows of %s (%s); trying again later", self.where, exc)
