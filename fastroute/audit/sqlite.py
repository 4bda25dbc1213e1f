"""The audit log in one SQLite file, shared by the workers of one machine.

WAL mode (readers never wait for a writer), ``synchronous = NORMAL`` (a commit does not fsync: a
power cut may lose the last commits, never the file), a busy timeout for the writers of the other
workers.  Each worker has:

- on the request path, :meth:`SqliteAuditLog.record`: an append to a deque, nothing else (waking
  a thread per record would cost the loop a GIL hand-off each time — see ``recording/log.py``);
- one writer thread: every ``interval_s`` (50 ms), or at once for a ``flush()``, it takes what
  has queued and commits it, up to ``batch_max`` records per transaction.  When the file is
  locked longer than the busy timeout (another process holds it) or cannot be written, the batch
  stays in memory and is tried again 100 ms later, then 200 ms, … up to every 2 s (at once
  for a ``flush()``); meanwhile the queue fills up to ``max_queued`` records (the batch in hand
  counted) and new records are dropped, said once when it starts and with their count when it
  ends.  A record the database refuses (a field of the wrong type: the caller's bug) is skipped
  and said, not retried.  With ``retention_days``, the same thread deletes older records at
  start and every ``retention_interval_s`` (an hour), ``PURGE_CHUNK`` rows per transaction and
  at most ``RETENTION_CHUNKS`` transactions per turn, so that writing goes on between them;
- one reader thread with its own read-only connection: every query runs there, never on the
  event loop, and is answered from an index (``EXPLAIN QUERY PLAN`` in tests/test_audit.py).
  ``logs()`` reads the ``limit`` newest rows of the index its filter names.  ``usage()`` sums
  the hourly sums — ``usage_hourly`` per hour, key and model, ``usage_sessions`` per hour, key
  and session, which the writers keep up to date in the same transactions that insert and purge
  records — and, for the parts of an hour at the ends of its range, the records themselves
  (never more than two hours of them, through an index).

Records are readable by every worker once committed: within ``interval_s`` of ``record()``, at
once after ``flush()``.  ``close()`` writes everything queued (one more try when the file is
locked; what then cannot be written is counted in the log).

Measured (``benchmarks/test_bench_audit.py``; Python 3.11, SQLite 3.40, uvloop, 2 cores shared
with a CI run, medians): ``record()`` 0.3–0.6 µs; a record written, the writer's work included,
15–17 µs (four indexes and two upserts of sums: one writer takes 20,000–60,000 records a second,
by the machine's load); on 100,000 records, ``logs(key=…)`` 0.6 ms for 100 rows, 11 ms for 1,000; ``usage()``
1.5 ms over everything; 14 ms over a range whose ends cut two hours holding 18,000 records —
the records of the cut hours are what a range costs, so a caller that can should pass bounds
on the hour.

The schema's version is SQLite's ``user_version``: later changes are new entries of
``MIGRATIONS``, applied once, in order, by whichever worker starts first; a file from a newer
fastroute is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import operator
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from fastroute.audit.queued import Queued
from fastroute.audit.record import (
    FIELDS,
    AuditRecord,
    GroupBy,
    check_group,
    clamp_limit,
    usage_row,
)
from fastroute.storage.base import StorageError, StorageUnavailable
from fastroute.storage.sqlite_file import open_wal

log = logging.getLogger("fastroute.audit")

#: each migration's statements; the schema's version (``PRAGMA user_version``) is the number applied
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the records; what the queries filter and sum first, the long texts last
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            timestamp INTEGER NOT NULL,
            key_name TEXT,
            session TEXT,
            model TEXT,
            provider TEXT,
            sent_model TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            cost_micros INTEGER,
            latency_ms REAL,
            ttft_ms REAL,
            status INTEGER,
            stream INTEGER,
            estimated INTEGER,
            request_id TEXT,
            error TEXT
        )""",
        "CREATE INDEX audit_timestamp ON audit (timestamp)",
        "CREATE INDEX audit_key ON audit (key_name, timestamp)",
        "CREATE INDEX audit_model ON audit (model, timestamp)",
        "CREATE INDEX audit_session ON audit (session, timestamp)",
        # the sums of the records per hour, key and model, and per hour, key and session (none:
        # ''), kept by the writers in the transactions that insert and purge records: usage() over
        # whole hours reads these
        *(f"""CREATE TABLE {table} (
            hour INTEGER NOT NULL,
            key_name TEXT NOT NULL,
            {column} TEXT NOT NULL,
            requests INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            cost_micros INTEGER NOT NULL,
            PRIMARY KEY (hour, key_name, {column})
        ) WITHOUT ROWID""" for table, column in (("usage_hourly", "model"), ("usage_sessions", "session"))),
    ),
    (  # 2: what the exact cache did with the request ([cache])
        "ALTER TABLE audit ADD COLUMN cache TEXT",
    ),
)

#: records committed in one transaction at most
BATCH_MAX = 1000
#: seconds between the writer's turns: how late a record may reach the file
INTERVAL_S = 0.05
#: seconds a writer waits for another process's write lock before it tries again later
BUSY_TIMEOUT_S = 5.0
#: records waiting for the file, at most (beyond: dropped, with a warning)
MAX_QUEUED = 100_000
#: seconds between retention purges
RETENTION_INTERVAL_S = 3600.0
#: rows deleted per transaction while purging, and transactions per retention turn
PURGE_CHUNK = 5000
RETENTION_CHUNKS = 10
#: the pause between tries while the file cannot be written: doubled each time, up to the maximum
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

_INSERT = f"INSERT INTO audit ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})"
_SELECT = f"SELECT {', '.join(FIELDS)} FROM audit"
#: the oldest records, a purge's chunk (in the order of the timestamp index: no sort)
_CHUNK = f"SELECT id FROM audit WHERE timestamp < ? ORDER BY timestamp, id LIMIT {PURGE_CHUNK}"
_PURGE = f"DELETE FROM audit WHERE id IN ({_CHUNK})"


def _rollup(table: str, column: str, sign: str, where: str) -> str:
    """Add (``sign`` ``""``) or take away (``"-"``) the sums of the records ``where`` selects to ``table``."""
    sums = ", ".join(f"{sign}coalesce(sum({c}), 0)" for c in ("prompt_tokens", "completion_tokens", "cached_tokens",
                                                               "cost_micros"))
    return (f"INSERT INTO {table} (hour, key_name, {column}, requests, prompt_tokens, completion_tokens, "
            f"cached_tokens, cost_micros) SELECT CAST(timestamp AS INTEGER) / {HOUR_MS}, coalesce(key_name, ''), "
            f"coalesce({column}, ''), {sign}count(*), {sums} FROM audit WHERE {where} GROUP BY 1, 2, 3 "
            f"ON CONFLICT (hour, key_name, {column}) DO UPDATE SET requests = requests + excluded.requests, "
            "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = completion_tokens + excluded.completion_tokens, "
            "cached_tokens = cached_tokens + excluded.cached_tokens, "
            "cost_micros = cost_micros + excluded.cost_micros")


_ROLLUPS = (("usage_hourly", "model"), ("usage_sessions", "session"))
_ROLLUP_ADD = tuple(_rollup(table, column, "", "id > ?") for table, column in _ROLLUPS)
_ROLLUP_SUB = tuple(_rollup(table, column, "-", f"id IN ({_CHUNK})") for table, column in _ROLLUPS)
_ROLLUP_EMPTY = tuple(f"DELETE FROM {table} WHERE hour <= ? AND requests <= 0" for table, _ in _ROLLUPS)
#: a group of usage(), from the records and from the hourly sums (where none is '', as it is NULL)
_RAW_GROUP = {"key": "nullif(key_name, '')", "model": "coalesce(model, '')", "session": "nullif(session, '')",
              "day": "strftime('%Y-%m-%d', timestamp / 1000, 'unixepoch')"}
_HOURLY_GROUP = {"key": "nullif(key_name, '')", "model": "model", "session": "nullif(session, '')",
                 "day": f"strftime('%Y-%m-%d', hour * {HOUR_MS // 1000}, 'unixepoch')"}
_ROW = operator.attrgetter(*FIELDS)
#: what a record the database cannot take raises: the record is skipped, not tried again
_BAD_RECORD = (sqlite3.InterfaceError, sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError,
               OverflowError, TypeError, ValueError)


def default_path(environ: Any = os.environ) -> Path:
    """``$XDG_DATA_HOME/fastroute/audit.sqlite3``, else ``~/.local/share/fastroute/audit.sqlite3``."""
    base = environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "fastroute" / "audit.sqlite3"


def _conditions(key: str | None, model: str | None, session: str | None, since: int | None,
                until: int | None) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    for column, value in (("key_name", key), ("model", model), ("session", session)):
        if value is not None:
            terms.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        terms.append("timestamp >= ?")
        params.append(int(since))
    if until is not None:
        terms.append("timestamp < ?")
        params.append(int(until))
    return (" WHERE " + " AND ".join(terms) if terms else ""), params


def logs_query(key: str | None = None, model: str | None = None, since: int | None = None,
               until: int | None = None, limit: int = 100, session: str | None = None) -> tuple[str, list[Any]]:
    """The SQL and parameters of :meth:`SqliteAuditLog.logs` (the tests explain its plan)."""
    where, params = _conditions(key, model, session, since, until)
    return f"{_SELECT}{where} ORDER BY timestamp DESC, id DESC LIMIT ?", [*params, clamp_limit(limit)]


def usage_query(since: int | None = None, until: int | None = None, group_by: str = "key",
                key: str | None = None) -> tuple[str, list[Any]]:
    """The SQL and parameters of :meth:`SqliteAuditLog.usage`.

    The whole hours of ``[since, until)`` are summed from the hourly sums (``usage_sessions`` by
    session, ``usage_hourly`` else), the parts of an hour at either end (or a range within one
    hour) from the records, through the timestamp index (the key's, with ``key``): never more than
    two hours of records, however long the range.
    """
    check_group(group_by)
    since = None if since is None else int(since)
    until = None if until is None else int(until)
    parts: list[str] = []
    params: list[Any] = []

    def records(lo: int | None, hi: int | None) -> None:
        where, p = _conditions(key, None, None, lo, hi)
        parts.append(f"SELECT {_RAW_GROUP[group_by]} AS grp, count(*) AS requests, "
                     "coalesce(sum(prompt_tokens), 0) AS prompt, coalesce(sum(completion_tokens), 0) AS completion, "
                     "coalesce(sum(cached_tokens), 0) AS cached, coalesce(sum(cost_micros), 0) AS cost "
                     f"FROM audit{where} GROUP BY grp")
        params.extend(p)

    table = "usage_sessions" if group_by == "session" else "usage_hourly"

    def hours(first: int | None, end: int | None) -> None:
        terms = [t for t, v in (("key_name = ?", key), ("hour >= ?", first), ("hour < ?", end)) if v is not None]
        parts.append(f"SELECT {_HOURLY_GROUP[group_by]} AS grp, sum(requests) AS requests, "
                     "sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion, "
                     f"sum(cached_tokens) AS cached, sum(cost_micros) AS cost FROM {table}"
                     f"{' WHERE ' + ' AND '.join(terms) if terms else ''} GROUP BY grp")
        params.extend(v for v in (key, first, end) if v is not None)

    first = None if since is None else -(-since // HOUR_MS)  # the first whole hour
    end = None if until is None else until // HOUR_MS  # the hours before this one are whole
    if first is not None and end is not None and first >= end:
        records(since, until)
    else:
        if since is not None and first is not None and since < first * HOUR_MS:
            records(since, first * HOUR_MS)
        hours(first, end)
        if until is not None and end is not None and end * HOUR_MS < until:
            records(end * HOUR_MS, until)
    sql = ("SELECT grp, sum(requests) AS requests, sum(prompt), sum(completion), sum(cached), sum(cost) AS cost "
           f"FROM ({' UNION ALL '.join(parts)}) GROUP BY grp "
           "ORDER BY cost DESC, requests DESC, grp IS NOT NULL, grp")
    return sql, params


class _Op:
    """A request to the writer thread: ``flush``, ``purge`` (``arg``: the bound) or ``stop``."""

    __slots__ = ("arg", "future", "kind")

    def __init__(self, kind: str, arg: int = 0) -> None:
        self.kind = kind
        self.arg = arg
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class SqliteAuditLog(Queued):
    def __init__(self, path: str | os.PathLike[str] | None = None, retention_days: float | None = None, *,
                 max_queued: int = MAX_QUEUED, batch_max: int = BATCH_MAX, interval_s: float = INTERVAL_S,
                 busy_timeout_s: float = BUSY_TIMEOUT_S, retention_interval_s: float = RETENTION_INTERVAL_S) -> None:
        super().__init__(max_queued)
        self.path = Path(os.path.abspath(os.path.expanduser(path))) if path is not None else default_path()
        self.where = str(self.path)
        self.retention_days = retention_days
        self.batch_max = batch_max
        self.interval_s = interval_s
        self.busy_timeout_s = busy_timeout_s
        self.retention_interval_s = retention_interval_s
        self._batch: list[AuditRecord] = []
        self._ops: deque[_Op] = deque()
        self._ops_lock = threading.Lock()
        self._writer_done = False
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None

    # ── the event loop's side ───────────────────────────────────────────────

    async def start(self) -> None:
        if self._writer is not None or self._closed:
            raise StorageError(f"audit: {self.where} is already {'closed' if self._closed else 'started'}")
        conn = await asyncio.to_thread(self._open)
        self._writer = threading.Thread(target=self._run, args=(conn,), name="fastroute-audit-writer", daemon=True)
        self._writer.start()
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastroute-audit-reader")

    async def flush(self) -> None:
        if self._writer is None:
            raise self._not_open()
        op = _Op("flush")
        if not self._send(op):
            return  # the writer has stopped: closed, everything written then
        await asyncio.wrap_future(op.future)

    async def purge(self, older_than_ms: int) -> int:
        op = _Op("purge", int(older_than_ms))
        if self._writer is None or self._closed or not self._send(op):
            raise self._not_open()
        return await asyncio.wrap_future(op.future)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bound = 0
        if self._writer is not None:
            self._send(_Op("stop"))  # after every queued record: they are written first
            await asyncio.to_thread(self._writer.join)
        elif self._pending:
            log.warning("audit: %s closed before it started; %d record(s) not written",
                        self.where, len(self._pending))
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
            self._reader.shutdown()

    def _send(self, op: _Op) -> bool:
        """Hand ``op`` to the writer; False when it has stopped."""
        with self._ops_lock:
            if self._writer_done:
                return False
            self._ops.append(op)
        self._wake.set()
        return True

    # ── queries (on the reader thread) ──────────────────────────────────────

    async def logs(self, key: str | None = None, model: str | None = None, since: int | None = None,
                   until: int | None = None, limit: int = 100, *, session: str | None = None) -> list[AuditRecord]:
        rows = await self._query(*logs_query(key, model, since, until, limit, session))
        return [AuditRecord(*row[:-3], bool(row[-3]), bool(row[-2]), row[-1]) for row in rows]

    async def usage(self, since: int | None = None, until: int | None = None, group_by: GroupBy = "key",
                    key: str | None = None) -> list[dict[str, Any]]:
        rows = await self._query(*usage_query(since, until, group_by, key))
        return [usage_row(group_by, *row) for row in rows]

    async def _query(self, sql: str, params: list[Any]) -> list[Any]:
        if self._reader is None or self._closed:
            raise self._not_open()
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, sql, params)

    def _read(self, sql: str, params: list[Any]) -> list[Any]:
        try:
            conn = self._reader_conn
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA query_only = 1")
                self._reader_conn = conn
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"audit: cannot read {self.where}: {exc}") from exc

    def _close_reader(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    # ── opening ─────────────────────────────────────────────────────────────

    def _open(self) -> sqlite3.Connection:
        """The writer's connection, the file created, in WAL mode and at the current schema."""
        return open_wal(self.path, "audit", self.busy_timeout_s, self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StorageError(f"audit: {self.where} has schema version {version}, written by a newer "
                                   f"fastroute (this one knows up to {len(MIGRATIONS)})")
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            if version < len(MIGRATIONS):
                conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ── the writer thread ───────────────────────────────────────────────────

    def _run(self, conn: sqlite3.Connection) -> None:
        pause = RETRY_MIN_S
        failing = False
        next_retention = time.monotonic()  # at start, then every retention_interval_s
        try:
            while True:
                self._wake.wait(pause if failing else self.interval_s)
                self._wake.clear()
                with self._ops_lock:
                    ops = list(self._ops)
                    self._ops.clear()
                stop = any(op.kind == "stop" for op in ops)
                try:
                    self._write_out(conn)  # every record queued before these ops
                except sqlite3.Error as exc:  # the file: locked past the busy timeout, full, broken
                    if not failing:
                        log.warning("audit: cannot write to %s (%s); records wait in memory and are tried again",
                                    self.where, exc)
                        failing = True
                    self._fail(ops, StorageUnavailable(f"audit: cannot write to {self.where}: {exc}"))
                    if stop:
                        log.warning("audit: closing with %d record(s) not written to %s",
                                    self._held + len(self._pending), self.where)
                        return
                    pause = min(pause * 2, RETRY_MAX_S)
                    continue
                except Exception as exc:  # a bug, not the file: the batch in hand is lost, the writer goes on
                    log.exception("audit: a batch of %d record(s) for %s could not be written", self._held,
                                  self.where)
                    self._batch, self._held = [], 0
                    self._fail(ops, StorageUnavailable(f"audit: cannot write to {self.where}: {exc}"))
                    if stop:
                        return
                    continue
                if failing:
                    log.warning("audit: writing to %s again", self.where)
                    failing, pause = False, RETRY_MIN_S
                for op in ops:
                    if op.kind == "flush":
                        op.future.set_result(None)
                    elif op.kind == "purge":
                        try:
                            op.future.set_result(self._purge(conn, op.arg)[0])
                        except sqlite3.Error as exc:
                            op.future.set_exception(StorageUnavailable(f"audit: cannot purge {self.where}: {exc}"))
                if self.retention_days is not None and time.monotonic() >= next_retention:
                    more = self._retain(conn)
                    next_retention = time.monotonic() + (0.0 if more else self.retention_interval_s)
                if stop:
                    return
        finally:
            conn.close()
            with self._ops_lock:
                self._writer_done = True
                ops = list(self._ops)
                self._ops.clear()
            self._settle_left(ops)

    def _write_out(self, conn: sqlite3.Connection) -> None:
        """Commit the batch in hand, then what is queued now, ``batch_max`` records per transaction."""
        pending = self._pending
        todo = len(pending)  # not what comes meanwhile: the waiting ops are answered first
        batch = self._batch
        while True:
            if not batch:
                n = min(todo, self.batch_max)
                if n <= 0:
                    return
                todo -= n
                self._held = n  # before taking them: the bound counts them all the while
                batch = self._batch = [pending.popleft() for _ in range(n)]
            self.written += self._commit(conn, batch)
            batch = self._batch = []
            self._held = 0

    def _commit(self, conn: sqlite3.Connection, batch: list[AuditRecord]) -> int:
        """Write ``batch`` in one transaction; the records written.  sqlite3.Error when the file is the
        problem (the batch is kept and tried again); a record the database refuses is skipped."""
        try:
            rows = [_ROW(r) for r in batch]
        except AttributeError:
            rows = [row for row in map(self._row, batch) if row is not None]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the write lock is held: the new records' ids follow the largest one now
            last = conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]
            try:
                conn.executemany(_INSERT, rows)
            except _BAD_RECORD:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                last = conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]
                rows = self._insert_each(conn, rows)
            for sql in _ROLLUP_ADD:
                conn.execute(sql, (last,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(rows)

    def _row(self, rec: Any) -> tuple[Any, ...] | None:
        try:
            return _ROW(rec)
        except AttributeError:
            log.error("audit: not an AuditRecord (%s); skipped", type(rec).__name__)
            return None

    def _insert_each(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows of a refused batch one by one, in the open transaction; the rows written."""
        written = []
        for row in rows:
            try:
                conn.execute(_INSERT, row)
            except _BAD_RECORD as exc:
                log.error("audit: a record for %s could not be written (%s); skipped: %r", self.where, exc, row[:2])
                continue
            written.append(row)
        return written

    def _purge(self, conn: sqlite3.Connection, older_than_ms: int, max_chunks: int = 0) -> tuple[int, bool]:
        """Delete records older than the bound (and their hourly sums), PURGE_CHUNK per
        transaction, so that the other workers' writers get their turn between them; how many, and
        whether some are left (after ``max_chunks`` transactions)."""
        total = chunks = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql in _ROLLUP_SUB:
                    conn.execute(sql, (older_than_ms,))
                for sql in _ROLLUP_EMPTY:
                    conn.execute(sql, (older_than_ms // HOUR_MS,))
                n = conn.execute(_PURGE, (older_than_ms,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            total += n
            chunks += 1
            if n < PURGE_CHUNK:
                return total, False
            if max_chunks and chunks >= max_chunks:
                return total, True

    def _retain(self, conn: sqlite3.Connection) -> bool:
        """One retention turn; True when older records are left for the next one."""
        assert self.retention_days is not None
        cutoff = time.time_ns() // 1_000_000 - int(self.retention_days * DAY_MS)
        try:
            removed, more = self._purge(conn, cutoff, RETENTION_CHUNKS)
        except sqlite3.Error as exc:
            log.warning("audit: could not purge old records of %s (%s); trying again later", self.where, exc)
            return False
        if removed:
            log.info("audit: %d record(s) older than %g days purged from %s", removed, self.retention_days,
                     self.where)
        return more
