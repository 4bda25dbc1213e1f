"""One audited request (:class:`AuditRecord`), and the interface every audit log implements (:class:`AuditLog`).

A record names the key that made the request (its configured name, never the key or a hash of
it), what was asked and what was sent where, the tokens and the cost, how long it took and how
it ended.  :meth:`AuditLog.record` is on the request path: it only queues (never waits, never
raises) and the log writes off the loop; the queries are awaited and run off the loop too.

Time bounds are half-open, in ms since the epoch: ``since`` is inclusive and ``until`` exclusive
(``since <= timestamp < until``), so adjacent windows never count a record twice.  ``purge``
removes what is older than its bound (``timestamp < older_than_ms``).

Errors are the storage seam's (:mod:`fastroute.storage.base`): ``StorageError`` when the log
cannot be opened or is used before ``start()`` / after ``close()``; ``StorageUnavailable``
(503 to a client of the admin API) when its file cannot be read or written now.
"""

from __future__ import annotations

import abc
import dataclasses
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fastroute.storage.base import Backed

#: the groups :meth:`AuditLog.usage` sums by
GroupBy = Literal["key", "model", "day", "session"]
GROUPS: tuple[str, ...] = ("key", "model", "day", "session")
#: records one query returns at most, whatever its ``limit``
MAX_LIMIT = 1000
#: characters kept of a name a client chose (model, session, request id) and of an error text;
#: longer ones are cut on ``record()``, so that the queue's bound is a bound in bytes too
NAME_LIMIT = 256
ERROR_LIMIT = 2048


@dataclass(slots=True)
class AuditRecord:
    """One finished request.  Never a key or a key's hash: ``key_name`` is the configured name."""

    request_id: str
    #: when the request arrived, ms since the epoch
    timestamp: int
    #: the name of the key it came with; None when the router takes no keys
    key_name: str | None = None
    #: the client's session (a header it sent), when it sent one
    session: str | None = None
    #: the model the client asked for
    model: str = ""
    #: the provider that answered (the last tried); None when none was tried
    provider: str | None = None
    #: the model name sent to that provider
    sent_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: of the prompt tokens, those the provider served from its cache
    cached_tokens: int = 0
    #: what the request cost, in millionths of the price's currency; None when no price is known
    cost_micros: int | None = None
    #: from the request's arrival to its last byte
    latency_ms: float = 0.0
    #: to the first token of a stream; None when not streamed or nothing came
    ttft_ms: float | None = None
    #: the HTTP status answered to the client
    status: int = 200
    #: what went wrong, when something did (cut to ERROR_LIMIT characters)
    error: str | None = None
    stream: bool = False
    #: the usage was counted by fastroute, not reported by the upstream
    estimated: bool = False
    #: "hit" when the exact cache answered it (no provider was called; it cost nothing), "miss" when
    #: the cache was looked in first, "bypass" when the client said not to (``Cache-Control``)
    cache: str | None = None


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AuditRecord))


def clipped(rec: AuditRecord) -> AuditRecord:
    """``rec`` with the names a client chose cut to NAME_LIMIT and its error to ERROR_LIMIT characters
    (a copy when something was cut: the caller's record is left alone)."""
    changes: dict[str, str] = {}
    for name in ("request_id", "model", "session", "key_name", "provider", "sent_model"):
        value = getattr(rec, name)
        if type(value) is str and len(value) > NAME_LIMIT:
            changes[name] = value[:NAME_LIMIT] + "…"
    if type(rec.error) is str and len(rec.error) > ERROR_LIMIT:
        changes["error"] = rec.error[:ERROR_LIMIT] + f"… ({len(rec.error)} characters)"
    return dataclasses.replace(rec, **changes) if changes else rec


def oversized(rec: AuditRecord) -> bool:
    """Cheap test on ``record()``: may a field need cutting?  (Then :func:`clipped` decides.)"""
    error = rec.error
    session = rec.session
    return (len(rec.model) + len(rec.request_id) + (len(session) if session is not None else 0) > NAME_LIMIT
            or (error is not None and len(error) > ERROR_LIMIT))


def clamp_limit(limit: int) -> int:
    """A query's limit: at most MAX_LIMIT; zero or less returns nothing."""
    return max(0, min(int(limit), MAX_LIMIT))


def check_group(group_by: str) -> None:
    if group_by not in GROUPS:
        raise ValueError(f"audit: group_by must be one of {', '.join(GROUPS)}, not {group_by!r}")


def utc_day(timestamp_ms: int) -> str:
    """The UTC date of a timestamp, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp_ms // 1000))


def usage_row(group_by: str, group: Any, requests: int, prompt: int, completion: int, cached: int,
              cost: int) -> dict[str, Any]:
    return {group_by: group, "requests": requests, "prompt_tokens": prompt, "completion_tokens": completion,
            "cached_tokens": cached, "cost_micros": cost}


def usage_order(row: dict[str, Any], group_by: str) -> tuple[Any, ...]:
    """The order of :meth:`AuditLog.usage`: cost descending, then requests descending, then the
    group ascending (no group — None — first).  The SQLite log sorts the same way in SQL."""
    group = row[group_by]
    return (-row["cost_micros"], -row["requests"], group is not None, group if group is not None else "")


class AuditLog(Backed, abc.ABC):
    """Where audit records go, and the queries over them.

    Build it anywhere (nothing is opened); ``await start()`` on the worker's event loop (after
    the fork).  ``record()`` may be called before: records wait in the queue.
    """

    #: for the banner and log lines: a path, or what the log is
    where: str
    #: records refused since the log was built (its queue full, or it closed)
    dropped: int

    async def start(self) -> None:
        """Open the file and the threads, on the running loop."""

    @abc.abstractmethod
    def record(self, rec: AuditRecord) -> None:
        """Queue ``rec``; never waits, never raises.  Beyond the queue's bound (the disk stalled
        that long) it is dropped, counted in :attr:`dropped` and said in the log once."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return when every record queued so far is written (readable by every worker).
        StorageUnavailable when the file cannot be written now (the records stay queued)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Write every record queued, then release everything.  Later records are dropped."""

    @abc.abstractmethod
    async def logs(self, key: str | None = None, model: str | None = None, since: int | None = None,
                   until: int | None = None, limit: int = 100, *, session: str | None = None) -> list[AuditRecord]:
        """Records newest first (by timestamp, then by arrival in the log), filtered by key name,
        model (as the client asked for it), session and ``since <= timestamp < until``; at most
        ``limit`` of them, and never more than MAX_LIMIT."""

    @abc.abstractmethod
    async def usage(self, since: int | None = None, until: int | None = None, group_by: GroupBy = "key",
                    key: str | None = None) -> list[dict[str, Any]]:
        """Sums per group: ``{group_by: name, "requests", "prompt_tokens", "completion_tokens",
        "cached_tokens", "cost_micros"}``, cost descending (then requests descending, then the
        group).  A day is the UTC date ``YYYY-MM-DD``; a record without a key or session (None or
        ``""``) is in the group None, one without a model in ``""``.  ValueError for another group_by."""

    @abc.abstractmethod
    async def purge(self, older_than_ms: int) -> int:
        """Remove the records with ``timestamp < older_than_ms``; how many were removed."""


# ── queries over records in memory (the memory log; a twin of the SQL) ─────

def matcher(key: str | None, model: str | None, session: str | None, since: int | None,
            until: int | None) -> Callable[[AuditRecord], bool]:
    def match(r: AuditRecord) -> bool:
        return ((key is None or r.key_name == key) and (model is None or r.model == model)
                and (session is None or r.session == session)
                and (since is None or r.timestamp >= since) and (until is None or r.timestamp < until))
    return match


def newest(records: Iterable[AuditRecord], match: Callable[[AuditRecord], bool], limit: int) -> list[AuditRecord]:
    """The ``limit`` newest matching records of ``records`` (given in arrival order)."""
    found = heapq.nlargest(clamp_limit(limit), ((r.timestamp, i, r) for i, r in enumerate(records) if match(r)))
    return [r for _, _, r in found]


def sums(records: Iterable[AuditRecord], group_by: str) -> list[dict[str, Any]]:
    check_group(group_by)
    groups: dict[Any, list[int]] = {}
    for r in records:
        if group_by == "key":
            group: Any = r.key_name or None
        elif group_by == "model":
            group = r.model or ""
        elif group_by == "session":
            group = r.session or None
        else:
            group = utc_day(r.timestamp)
        s = groups.get(group)
        if s is None:
            s = groups[group] = [0, 0, 0, 0, 0]
        s[0] += 1
        s[1] += r.prompt_tokens
        s[2] += r.completion_tokens
        s[3] += r.cached_tokens
        s[4] += r.cost_micros or 0
    rows = [usage_row(group_by, group, *s) for group, s in groups.items()]
    rows.sort(key=lambda row: usage_order(row, group_by))
    return rows
