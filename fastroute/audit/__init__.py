"""The audit log: one record per finished request — who (the key's name, never the key), what,
where, how many tokens, what it cost, how long, how it ended — and the queries over it.

- :class:`AuditRecord`: one request;
- :class:`AuditLog`: the interface — ``record()`` queues (never waits, never raises), ``logs()``
  and ``usage()`` query, ``purge()`` removes old records;
- :class:`SqliteAuditLog`: one SQLite file shared by the workers of a machine, written by a
  thread, queried from indexes (:mod:`.sqlite`);
- :class:`RedisAuditLog`: one Redis shared by every instance, written by a task in Lua
  scripts, queried from sorted sets and hourly sums (:mod:`.redis`);
- :class:`MemoryAuditLog`: this worker's records in memory, bounded — tests, throwaway runs.

Importing the package opens nothing and imports neither :mod:`sqlite3` nor :mod:`redis`: the
SQLite and Redis logs are imported when first named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastroute.audit.memory import MemoryAuditLog
from fastroute.audit.record import MAX_LIMIT, AuditLog, AuditRecord

if TYPE_CHECKING:
    from fastroute.audit.redis import RedisAuditLog
    from fastroute.audit.sqlite import SqliteAuditLog

__all__ = ["MAX_LIMIT", "AuditLog", "AuditRecord", "MemoryAuditLog", "RedisAuditLog", "SqliteAuditLog"]


def __getattr__(name: str) -> Any:
    if name == "SqliteAuditLog":
        from fastroute.audit.sqlite import SqliteAuditLog

        return SqliteAuditLog
    if name == "RedisAuditLog":
        from fastroute.audit.redis import RedisAuditLog

        return RedisAuditLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
