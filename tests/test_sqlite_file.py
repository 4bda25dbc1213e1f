"""Several processes opening one fresh SQLite file at once (``--workers N``, two instances on
one data directory): every one gets a migrated WAL connection, none "database is locked".

Putting a fresh file in WAL answers SQLITE_BUSY to the others without calling their busy
handler, so the race is lost a few times in a hundred; forty fresh files make it certain."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from fastroute.storage.base import StorageError
from fastroute.storage.sqlite_file import open_wal

OPENERS = 4
FILES = 40


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS seen (who INTEGER PRIMARY KEY)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _open(path: str, who: int, start, results) -> None:
    start.wait()
    try:
        conn = open_wal(Path(path), "test", 10.0, _migrate)
        conn.execute("INSERT INTO seen (who) VALUES (?)", (who,))
        time.sleep(0.02)  # held open a moment, as a worker holds its own
        conn.close()
        results.put((who, "ok"))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put((who, f"{type(exc).__name__}: {exc}"))


def test_processes_opening_fresh_files_at_once_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures = []
    for n in range(FILES):
        path = tmp_path / f"sub{n}" / "shared.sqlite3"
        start = ctx.Barrier(OPENERS)
        results = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), i, start, results)) for i in range(OPENERS)]
        for p in procs:
            p.start()
        outcome = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(10)
        failures += [(n, who, what) for who, what in outcome.items() if what != "ok"]
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert sorted(r[0] for r in conn.execute("SELECT who FROM seen")) == [
            who for who, what in sorted(outcome.items()) if what == "ok"]
        conn.close()
    assert failures == []


def test_a_file_held_past_the_timeout_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "held.sqlite3"
    holder = open_wal(path, "test", 1.0, _migrate)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"test: cannot use .*held\.sqlite3: database is locked"):
            open_wal(path, "test", 0.3, _migrate)
        assert time.monotonic() - started >= 0.25  # it waited, rather than failing at once
    finally:
        holder.execute("ROLLBACK")
        holder.close()
