"""Opening a SQLite file the way every fastroute store does: its directory made, WAL (the workers
of ``--workers N`` read and write it at once), ``synchronous = NORMAL``, then the caller's
schema migration; every failure a :class:`StorageError` naming the file and who wanted it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from fastroute.storage.base import StorageError


def open_wal(path: Path, who: str, timeout: float, migrate: Callable[[sqlite3.Connection], None]) -> sqlite3.Connection:
    """A connection (autocommit, usable from the thread that owns it) to ``path``, migrated;
    ``who`` starts every message (``storage``, ``audit``, ``limits``)."""
    where = str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{who}: cannot create the directory of {where}: {exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"{who}: cannot open {where}: {exc}") from exc
    try:
        _prepare(conn, where, who, timeout, migrate)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"{who}: cannot use {where}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, where: str, who: str, timeout: float,
             migrate: Callable[[sqlite3.Connection], None]) -> None:
    """WAL, ``synchronous``, the migration; retried while another process holds the file.

    Switching to WAL (and the WAL recovery of whoever opens the file first) can answer
    SQLITE_BUSY without calling the busy handler, so several processes starting at once
    (``--workers N``, two instances on one data directory) would see "database is locked"
    even with a timeout; they wait here for up to ``timeout`` seconds instead."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"{who}: {where} cannot be put in WAL mode (it stays {mode!r}); "
                                   "put it on a local file system")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
            return
        except sqlite3.OperationalError as exc:
            if not _contended(exc) or time.monotonic() + pause > deadline:
                raise
            if conn.in_transaction:
                conn.rollback()
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _contended(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text
