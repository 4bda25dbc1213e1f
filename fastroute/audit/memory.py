"""The throwaway audit log: this worker's records in memory, for tests and runs that may lose them.

Bounded by ``max_records``: past it the oldest record makes room (the way retention would), so
``record()`` never drops a new one while the log is open.  Queries scan what is held (up to
``max_records``: 10–80 ms for 100,000 by the machine's load, ``benchmarks/test_bench_audit.py``)
— fine for tests and the dashboard of a throwaway run; the SQLite log answers from indexes.
Workers do not share it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from fastroute.audit.record import (
    AuditLog,
    AuditRecord,
    GroupBy,
    check_group,
    clipped,
    matcher,
    newest,
    oversized,
    sums,
)

log = logging.getLogger("fastroute.audit")


class MemoryAuditLog(AuditLog):
    def __init__(self, max_records: int = 100_000) -> None:
        self.max_records = max_records
        self.where = f"memory (this worker's own, up to {max_records:,} records)"
        self.dropped = 0
        self._records: deque[AuditRecord] = deque(maxlen=max_records)
        self._closed = False

    def __len__(self) -> int:
        return len(self._records)

    def record(self, rec: AuditRecord) -> None:
        if self._closed:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("audit: a record came after %s closed; dropping records", self.where)
            return
        try:
            if oversized(rec):
                rec = clipped(rec)
        except TypeError:
            pass  # a field of the wrong type: kept as it is (the caller's bug, not the request's)
        except AttributeError:
            log.error("audit: not an AuditRecord (%s); skipped", type(rec).__name__)
            return
        self._records.append(rec)

    async def flush(self) -> None:
        """Nothing to write."""

    async def close(self) -> None:
        self._closed = True

    async def logs(self, key: str | None = None, model: str | None = None, since: int | None = None,
                   until: int | None = None, limit: int = 100, *, session: str | None = None) -> list[AuditRecord]:
        return newest(self._records, matcher(key, model, session, since, until), limit)

    async def usage(self, since: int | None = None, until: int | None = None, group_by: GroupBy = "key",
                    key: str | None = None) -> list[dict[str, Any]]:
        check_group(group_by)
        match = matcher(key, None, None, since, until)
        return sums((r for r in self._records if match(r)), group_by)

    async def purge(self, older_than_ms: int) -> int:
        kept = [r for r in self._records if r.timestamp >= older_than_ms]
        removed = len(self._records) - len(kept)
        if removed:
            self._records = deque(kept, maxlen=self.max_records)
        return removed
