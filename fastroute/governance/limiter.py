"""Rate limits and budgets per key: :class:`Limits`, the :class:`Limiter` and its :class:`Verdict`.

The public face of the counters package: everything a caller needs is importable from here
(importing it opens nothing and imports neither redis nor sqlite3).

Per request, ``await limiter.admit(name, limits)`` before the upstream call
and ``await limiter.settle(name, limits, tokens, cost_micros)`` after the
answer (a stream: at its end).  An admitted request is counted at once, in the
same atomic step as the check, so concurrent requests cannot all pass the last
slot; its tokens and cost are counted when it settles.

Windows.  Requests and tokens per minute use a **sliding window of two
buckets**: each key counts per UTC minute (``now_ms // 60_000``), and at
``elapsed`` ms into the current minute the estimate is::

    previous * (59_999 - elapsed) / 60_000 + current

— the previous minute weighs by the part of it still inside the last 60 s
(reckoned at the end of the current millisecond, so it weighs nothing at the
last millisecond and a little under 1 at the first).  A request is refused
when the estimate has reached the limit.  All of it in integers (both sides
times 60,000), identical in Python and Lua.  Chosen over fixed windows
because a fixed window lets a client spend its limit at 12:00:59 and again at
12:01:00 — twice the limit within two seconds; the sliding estimate lets
through about one request per ``60 / limit`` s after a full minute, and costs
the same two counters per key (current and previous minute), not a log of
timestamps.  It is an estimate that assumes the previous minute's requests
were spread evenly: a burst at its end is forgotten a little early.  In the
first minute of a key's life (no previous bucket) it is exactly a count.

Budgets are **fixed calendar periods in UTC**: ``day`` from 00:00, ``week``
from Monday 00:00, ``month`` from the 1st 00:00, or ``total`` (never resets).
Money is integer micro-dollars (``cost_micros``; ``budget_usd`` is rounded to
micros once).  A request is refused when the period's spend has reached the
budget; the request that crosses it is not cut (its cost is known only after).

``retry_after_s`` is the whole seconds (rounded up, at least 1) until the
refusing limit would admit the request again if nothing else came in: for a
window, until the estimate drops below the limit (for a full minute at the
limit: the minute's end; then, in steady state, ``60 / limit`` s); for a
budget, the period's end.  When several limits refuse, the verdict names the
one that lasts longest.  ``None`` when it never will: a ``total`` budget
spent, or a limit of 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from fastroute.governance.counters import (
    BUDGET,
    RPM,
    TPM,
    WINDOW_MS,
    Counters,
    Counts,
    MemoryCounters,
    RedisCounters,
)

__all__ = ["Counters", "Limiter", "Limits", "MemoryCounters", "RedisCounters", "Verdict"]

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "week", "month", "total")
DAY_MS = 86_400_000

REQUESTS_PER_MINUTE = "requests_per_minute"
TOKENS_PER_MINUTE = "tokens_per_minute"
BUDGET_USD = "budget_usd"


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's limits; ``None``: no such limit.  Validated when built (ValueError)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "month"
    # the same, as the counters take them: -1 for none, the budget in micro-dollars
    _rpm: int = field(init=False, repr=False, compare=False, default=-1)
    _tpm: int = field(init=False, repr=False, compare=False, default=-1)
    _budget: int = field(init=False, repr=False, compare=False, default=-1)
    _unlimited: bool = field(init=False, repr=False, compare=False, default=True)

    def __post_init__(self) -> None:
        for name in (REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name}: must be a whole number, 0 or more, got {value!r}")
        budget = self.budget_usd
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)
                                   or not math.isfinite(budget) or budget < 0):
            raise ValueError(f"budget_usd: must be a number of dollars, 0 or more, got {budget!r}")
        if self.budget_period not in PERIODS:
            raise ValueError(f"budget_period: must be one of {', '.join(PERIODS)}, got {self.budget_period!r}")
        rpm = -1 if self.requests_per_minute is None else self.requests_per_minute
        tpm = -1 if self.tokens_per_minute is None else self.tokens_per_minute
        micros = -1 if budget is None else round(budget * 1_000_000)
        object.__setattr__(self, "_rpm", rpm)
        object.__setattr__(self, "_tpm", tpm)
        object.__setattr__(self, "_budget", micros)
        object.__setattr__(self, "_unlimited", rpm < 0 and tpm < 0 and micros < 0)

    @property
    def budget_micros(self) -> int | None:
        return None if self._budget < 0 else self._budget


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Limiter.admit` decided.  True when admitted."""

    admitted: bool
    #: the limit that refused: ``requests_per_minute``, ``tokens_per_minute`` or ``budget_usd``
    limit: str | None = None
    #: whole seconds until that limit would admit again (at least 1); None: not before the limits change
    retry_after_s: int | None = None

    def __bool__(self) -> bool:
        return self.admitted


ADMITTED = Verdict(True)


class Limiter:
    """The limits of every key, counted in one :class:`~fastroute.governance.counters.Counters`
    (started and closed by its owner).  ``now``: UNIX seconds (``time.time()``), for tests."""

    __slots__ = ("_periods", "counters")

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        #: budget_period -> (start_ms, end_ms, id) of the period last asked for
        self._periods: dict[str, tuple[int, int, str]] = {}

    async def admit(self, key_name: str, limits: Limits, now: float | None = None) -> Verdict:
        """Refuse when a limit is reached; else count this request (at once) and admit it.

        A key with no limit at all is admitted without touching the counters."""
        if limits._unlimited:
            return ADMITTED
        now_ms = int((time.time() if now is None else now) * 1000)
        budget = limits._budget
        if budget >= 0:
            _, end_ms, period = self._period(limits.budget_period, now_ms)
        else:
            end_ms, period = 0, ""
        counts = await self.counters.take(key_name, now_ms, limits._rpm, limits._tpm, budget, period, end_ms)
        if not counts[0]:
            return ADMITTED
        return refusal(limits, now_ms, counts, end_ms)

    async def peek(self, key_name: str, limits: Limits, now: float | None = None) -> Counts:
        """The counts as the next request would be judged by, counting nothing (``/v1/budget``).

        Asked as a take with a limit of 0 requests a minute, which refuses everything and so
        counts nothing, in the same atomic step every kind already has."""
        now_ms = int((time.time() if now is None else now) * 1000)
        if limits._budget >= 0:
            _, end_ms, period = self._period(limits.budget_period, now_ms)
        else:
            end_ms, period = 0, ""
        return await self.counters.take(key_name, now_ms, 0, -1, limits._budget, period, end_ms)

    async def settle(self, key_name: str, limits: Limits, tokens: int, cost_micros: int,
                     now: float | None = None) -> None:
        """Add the answer's tokens to this minute and its cost to this period (both at ``now``),
        and wait until they are counted.

        Only what a limit of the key uses is counted: tokens with ``tokens_per_minute``, cost with
        ``budget_usd`` (so a budget set later starts from zero)."""
        self.settle_soon(key_name, limits, tokens, cost_micros, now)
        await self.counters.drained()

    def settle_soon(self, key_name: str, limits: Limits, tokens: int, cost_micros: int,
                    now: float | None = None) -> None:
        """:meth:`settle` without waiting (the request path's way: no task, no future per request;
        :meth:`~fastroute.governance.counters.Counters.drained` waits for them all)."""
        if tokens < 0 or cost_micros < 0:
            raise ValueError(f"settle: tokens and cost_micros must be 0 or more, got {tokens}, {cost_micros}")
        tokens = tokens if limits._tpm >= 0 else 0
        cost = cost_micros if limits._budget >= 0 else 0
        if not tokens and not cost:
            return
        now_ms = int((time.time() if now is None else now) * 1000)
        if cost:
            _, end_ms, period = self._period(limits.budget_period, now_ms)
        else:
            end_ms, period = 0, ""
        self.counters.add_soon(key_name, now_ms, tokens, cost, period, end_ms)

    def _period(self, kind: str, now_ms: int) -> tuple[int, int, str]:
        known = self._periods.get(kind)
        if known is not None and known[0] <= now_ms and (now_ms < known[1] or known[1] == 0):
            return known
        known = self._periods[kind] = period_of(kind, now_ms)
        return known


def period_of(kind: str, now_ms: int) -> tuple[int, int, str]:
    """``(start_ms, end_ms, id)`` of the UTC period holding ``now_ms``; ``total``: ``(0, 0, "total")``
    (an end of 0: never).  The id names the period in the counters' keys: ``day:2025-03-31``,
    ``week:2025-03-31`` (its Monday), ``month:2025-03``."""
    if kind == "total":
        return 0, 0, "total"
    day = now_ms // DAY_MS
    if kind == "day":
        return day * DAY_MS, (day + 1) * DAY_MS, f"day:{_date(day).isoformat()}"
    if kind == "week":
        monday = day - (day + 3) % 7  # 1970-01-01 was a Thursday
        return monday * DAY_MS, (monday + 7) * DAY_MS, f"week:{_date(monday).isoformat()}"
    if kind == "month":
        d = _date(day)
        start = datetime(d.year, d.month, 1, tzinfo=UTC)
        end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
        return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000, f"month:{d.year:04d}-{d.month:02d}"
    raise ValueError(f"unknown budget period {kind!r}")


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def window_wait_ms(limit: int, elapsed_ms: int, previous: int, current: int) -> int | None:
    """ms until the sliding estimate of a refused window drops below ``limit``, nothing else coming
    in; None for a limit of 0 (never)."""
    if limit <= 0:
        return None
    w = WINDOW_MS
    if current >= limit:  # not in this minute: in the next, where this minute is the previous one
        first = max(0, w + (-limit * w // current))  # smallest y with current * (w-1-y) < limit * w
        return w - elapsed_ms + first
    # this minute, once the previous one weighs little enough: smallest x with previous * (w-1-x) < (limit-current) * w
    first = w + (-(limit - current) * w // previous)
    return max(first - elapsed_ms, 1)


def refusal(limits: Limits, now_ms: int, counts: Counts, period_end_ms: int) -> Verdict:
    """The verdict for counts the counters refused: the refusing limit that lasts longest."""
    refused, prev_requests, requests, prev_tokens, tokens, _ = counts
    elapsed = now_ms % WINDOW_MS
    waits: list[tuple[int | None, str]] = []
    if refused & RPM:
        waits.append((window_wait_ms(limits._rpm, elapsed, prev_requests, requests), REQUESTS_PER_MINUTE))
    if refused & TPM:
        waits.append((window_wait_ms(limits._tpm, elapsed, prev_tokens, tokens), TOKENS_PER_MINUTE))
    if refused & BUDGET:
        waits.append((period_end_ms - now_ms if period_end_ms else None, BUDGET_USD))
    wait, limit = max(waits, key=lambda w: math.inf if w[0] is None else w[0])
    return Verdict(False, limit, None if wait is None else max(1, -(-wait // 1000)))
