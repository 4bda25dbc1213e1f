"""What the SQLite and the Redis audit logs share: the queue on the request path.

:meth:`Queued.record` appends to a deque and does nothing else (no wake-up, no lock: the
writer — a thread, or a task on the loop — takes what has queued on its own turn).  The bound
is ``max_queued`` records, the batch the writer holds counted; beyond it (the backend stalled
that long) new records are dropped, counted in ``dropped`` and said once when dropping starts
and, with their count, when it ends.  After ``close()`` the bound is 0: every later record is a
drop."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from fastroute.audit.record import AuditLog, AuditRecord, clipped, oversized
from fastroute.storage.base import StorageError

log = logging.getLogger("fastroute.audit")


class Queued(AuditLog):
    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        #: records dropped since the log was built; records written by this worker
        self.dropped = 0
        self.written = 0
        self._dropping = 0
        self._pending: deque[AuditRecord] = deque()
        #: records the writer took and has not written yet (they count against the bound)
        self._held = 0
        #: records that may wait: max_queued, 0 once closed
        self._bound = max_queued
        self._closed = False

    def record(self, rec: AuditRecord) -> None:
        pending = self._pending
        if len(pending) + self._held >= self._bound:
            self._drop()
            return
        if self._dropping:
            self._resume()
        try:
            if oversized(rec):
                rec = clipped(rec)
        except (TypeError, AttributeError):
            pass  # a field of the wrong type, or not a record: the writer skips it and says so
        pending.append(rec)

    def _drop(self) -> None:
        self.dropped += 1
        self._dropping += 1
        if self._dropping == 1:
            if self._closed:
                log.warning("audit: a record came after %s closed; dropping records", self.where)
            else:
                log.warning("audit: %d records wait for %s; dropping new ones until it catches up",
                            len(self._pending) + self._held, self.where)

    def _resume(self) -> None:
        log.warning("audit: %d record(s) dropped while %s was behind", self._dropping, self.where)
        self._dropping = 0

    def _not_open(self) -> StorageError:
        return StorageError(f"audit: {self.where} is {'closed' if self._closed else 'not started'}")

    def _settle_left(self, ops: list[Any]) -> None:
        """The writer has stopped: answer the ops it left — a flush is done when nothing waits any
        more, the others fail as closed."""
        written = not self._pending and not self._held  # a flush that came while closing: done
        self._fail([op for op in ops if op.kind != "flush" or not written],
                   StorageError(f"audit: {self.where} is closed"))
        for op in ops:
            if not op.future.done():
                op.future.set_result(None)

    @staticmethod
    def _fail(ops: list[Any], exc: Exception) -> None:
        """Fail the ops (each with ``kind`` and a ``future``; a ``stop`` is never failed)."""
        for op in ops:
            if op.kind != "stop" and not op.future.done():
                op.future.set_exception(exc)
