"""The counters behind rate limits and budgets: one interface (:class:`Counters`), two kinds here.

Per key name a counter keeps, for each UTC minute, the requests admitted and
the tokens settled, and for each budget period the micro-dollars spent.  Two
operations, both atomic where the kind is shared:

- :meth:`Counters.take` reads the current and previous minute and the
  period's spend, decides (the sliding-window rule of :func:`exceeds`) and,
  when nothing is exceeded, counts one request — one step, so two workers
  never both pass the last slot;
- :meth:`Counters.add` adds tokens to a minute and micro-dollars to a period.

The kinds:

- :class:`MemoryCounters`: one process's dicts (a single worker, tests).
- :class:`RedisCounters`: one Redis shared by every worker of every instance;
  each operation is one Lua script (:data:`TAKE_LUA`, :data:`ADD_LUA`).

``[storage] kind = "sqlite"`` (the workers of one machine) counts in neither:
:class:`fastroute.governance.shm_counters.ShmCounters` keeps the counts in a
memory-mapped file shared by those workers (see that module).

Shared and away (Redis down, or refusing us): requests keep being served.  The
log says so once; counting goes on in this process (a local fallback, each
process for itself: meanwhile the deployment may admit up to one limit per
process).  The fallback starts from the counts this process last saw from the
backend for each key (so a budget nearly spent stays nearly spent), plus what
it counts itself.  A task probes (0.5 s, doubling to 5 s); when the backend
answers, what was counted locally is added to it and the log says so once:

- kept: the requests and tokens of the current and the previous minute (they
  still weigh in the sliding window), and the spend of every period that has
  not ended (``total`` never ends);
- dropped: minutes older than that and periods that ended meanwhile — they
  can no longer refuse anything.  "Now" for that is the newest request time
  this process has seen.
- added exactly once per key (a marker key per batch, set in the same
  script).  What Redis itself lost (a restart without persistence) is not
  restored: only this process's own counts are added back.

Noticing costs the requests of that moment a wait: Redis ``timeout_s`` (1 s)
when it does not answer (none when the port refuses, as when it is stopped);
after that, no request tries the backend until the probe has found it back
(0.5–5 s later).

Windows and periods are reckoned by each process's clock (``now``), not the
backend's: the instances sharing a Redis must keep their clocks in time (NTP).

All keys expire on their own (a minute's hash at the end of the next minute
plus 60 s; a period's spend at the period's end plus an hour).  The key names
are stored and logged as given: pass a key's name, never its secret.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import uuid
from functools import partial
from typing import Any

from fastroute.storage.base import Backed, StorageError

log = logging.getLogger("fastroute.governance")

WINDOW_MS = 60_000
#: the bits of ``Counts[0]``: which limits refused (0: admitted)
RPM, TPM, BUDGET = 1, 2, 4

#: what :meth:`Counters.take` answers, as the decision saw them (after counting this request, when admitted):
#: ``(refused, previous_minute_requests, requests, previous_minute_tokens, tokens, spent_micros)``
Counts = tuple[int, int, int, int, int, int]

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


def exceeds(elapsed_ms: int, rpm: int, tpm: int, budget: int,
            prev_requests: int, requests: int, prev_tokens: int, tokens: int, spent: int) -> int:
    """The limits reached (bits RPM, TPM, BUDGET), a limit of -1 being none.  A window is reached when
    ``previous * (59_999 - elapsed) / 60_000 + current >= limit`` (here times 60,000, in integers)."""
    weight = WINDOW_MS - 1 - elapsed_ms
    refused = 0
    if rpm >= 0 and prev_requests * weight + requests * WINDOW_MS >= rpm * WINDOW_MS:
        refused = RPM
    if tpm >= 0 and prev_tokens * weight + tokens * WINDOW_MS >= tpm * WINDOW_MS:
        refused |= TPM
    if budget >= 0 and spent >= budget:
        refused |= BUDGET
    return refused


class Counters(Backed, abc.ABC):
    """Counts per key name.  Nothing is opened until :meth:`start`, on the worker's event loop.

    ``now_ms``: UNIX milliseconds; a limit of -1: none; ``period``: the budget period's id
    (``""`` when the key has no budget) and ``period_end_ms`` its end (0: never)."""

    #: for log lines: ``memory``, a path, or ``redis://host:port/db`` — never a password
    where: str

    async def start(self) -> None:
        """Open files, connections and threads, on the running loop."""

    async def close(self) -> None:
        """Release everything."""

    @property
    def degraded(self) -> bool:
        """True while a shared kind cannot reach its backend and counts in this process."""
        return False

    @abc.abstractmethod
    async def take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int,
                   period: str, period_end_ms: int) -> Counts:
        """In one atomic step: the counts; when no limit is reached (:func:`exceeds`), one more request
        in ``now_ms``'s minute."""

    @abc.abstractmethod
    async def add(self, name: str, now_ms: int, tokens: int, cost_micros: int,
                  period: str, period_end_ms: int) -> None:
        """``tokens`` more in ``now_ms``'s minute, ``cost_micros`` more spent in ``period``."""

    @abc.abstractmethod
    def add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                 period_end_ms: int) -> None:
        """:meth:`add`, without waiting for it and without a task (the request path settles this
        way): never raises; what could not reach the backend is counted locally, as :meth:`add` does."""

    async def drained(self) -> None:
        """Return when every :meth:`add_soon` so far is counted (a clean stop waits for this);
        at once for the kinds that count before ``add_soon`` returns."""


# ── memory ────────────────────────────────────────────────────────────────

class _Key:
    """One key's counts in one process: this minute and the previous one, this period's spend."""

    __slots__ = ("minute", "period", "period_end_ms", "prev_requests", "prev_tokens", "requests", "spent", "tokens")

    def __init__(self) -> None:
        self.minute = self.requests = self.tokens = self.prev_requests = self.prev_tokens = 0
        self.period = ""
        self.period_end_ms = self.spent = 0

    def roll(self, minute: int) -> None:
        if minute == self.minute + 1:
            self.prev_requests, self.prev_tokens = self.requests, self.tokens
        else:
            self.prev_requests = self.prev_tokens = 0
        self.requests = self.tokens = 0
        self.minute = minute

    def to_period(self, period: str, end_ms: int) -> bool:
        """Make ``period`` the key's current one; False when it is an older one (ended: ignore it)."""
        if period != self.period:
            if end_ms and self.period_end_ms and end_ms < self.period_end_ms:
                return False
            self.period, self.period_end_ms, self.spent = period, end_ms, 0
        return True


class MemoryCounters(Counters):
    """One process's counts (each worker its own; lost at exit).  One small object per key name seen."""

    def __init__(self) -> None:
        self.where = "memory (this process's own)"
        self._keys: dict[str, _Key] = {}

    def __len__(self) -> int:
        return len(self._keys)

    async def take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int,
                   period: str, period_end_ms: int) -> Counts:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = _Key()
        minute, elapsed = divmod(now_ms, WINDOW_MS)
        if minute > key.minute:
            key.roll(minute)  # a time before the key's minute (clocks, out of order) counts in its minute
        if budget >= 0:
            key.to_period(period, period_end_ms)  # an older period (clocks): the current one's spend counts
        spent = key.spent
        refused = exceeds(elapsed, rpm, tpm, budget, key.prev_requests, key.requests, key.prev_tokens, key.tokens,
                          spent)
        if not refused:
            key.requests += 1
        return refused, key.prev_requests, key.requests, key.prev_tokens, key.tokens, spent

    async def add(self, name: str, now_ms: int, tokens: int, cost_micros: int,
                  period: str, period_end_ms: int) -> None:
        self.add_soon(name, now_ms, tokens, cost_micros, period, period_end_ms)

    def add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                 period_end_ms: int) -> None:
        """Counted at once."""
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = _Key()
        if tokens:
            minute = now_ms // WINDOW_MS
            if minute > key.minute:
                key.roll(minute)
            if minute >= key.minute:
                key.tokens += tokens
            elif minute == key.minute - 1:
                key.prev_tokens += tokens
        if cost_micros and key.to_period(period, period_end_ms):
            key.spent += cost_micros


# ── the local fallback of the shared kinds ──────────────────────────────────

class _Batch:
    """Counts made locally, on their way to the backend: sent again, as they are, until it takes them."""

    __slots__ = ("id", "minutes", "pruned", "spend")

    def __init__(self, minutes: dict[tuple[str, int], list[int]],
                 spend: dict[tuple[str, str], list[int]], pruned: int = 0) -> None:
        self.id = uuid.uuid4().hex
        #: minutes made here that had ended before the batch was made (forgotten already)
        self.pruned = pruned
        #: (name, minute) -> [requests, tokens]
        self.minutes = minutes
        #: (name, period) -> [micros, period_end_ms]
        self.spend = spend

    def kept(self, latest_ms: int) -> tuple[dict[str, list[tuple[int, int, int]]], dict[str, list[tuple[str, int, int]]],
                                           int]:
        """Per name, the minutes and the periods that still count at ``latest_ms``; how many did not."""
        current = latest_ms // WINDOW_MS
        minutes: dict[str, list[tuple[int, int, int]]] = {}
        spend: dict[str, list[tuple[str, int, int]]] = {}
        dropped = 0
        for (name, minute), (requests, tokens) in self.minutes.items():
            if minute >= current - 1:
                minutes.setdefault(name, []).append((minute, requests, tokens))
            else:
                dropped += 1
        for (name, period), (micros, end_ms) in self.spend.items():
            if not end_ms or end_ms > latest_ms:
                spend.setdefault(name, []).append((period, micros, end_ms))
            else:
                dropped += 1
        return minutes, spend, dropped


class _Local:
    """The fallback: the counts last seen from the backend per key, plus those made here since.

    Only what is made here (``own``, and the batch on its way) is ever sent to the backend."""

    def __init__(self) -> None:
        #: name -> (minute, prev_requests, requests, prev_tokens, tokens), as the backend last answered
        self.seen_minute: dict[str, tuple[int, int, int, int, int]] = {}
        #: name -> (period, spent), as the backend last answered
        self.seen_spend: dict[str, tuple[str, int]] = {}
        self.minutes: dict[tuple[str, int], list[int]] = {}
        self.spend: dict[tuple[str, str], list[int]] = {}
        self.sending: _Batch | None = None
        self._pruned_minute = 0
        #: minutes made here and forgotten since the last batch (no window reads them any more)
        self.pruned = 0

    def __bool__(self) -> bool:
        return bool(self.minutes or self.spend or self.sending)

    def saw(self, name: str, now_ms: int, budget: int, period: str, counts: Counts) -> None:
        self.seen_minute[name] = (now_ms // WINDOW_MS, counts[1], counts[2], counts[3], counts[4])
        if budget >= 0:
            self.seen_spend[name] = (period, counts[5])

    def saw_added(self, name: str, now_ms: int, tokens: int, period: str, spent: int) -> None:
        seen = self.seen_minute.get(name)
        if tokens >= 0 and seen is not None and seen[0] == now_ms // WINDOW_MS:
            self.seen_minute[name] = (*seen[:4], tokens)
        if spent >= 0:
            self.seen_spend[name] = (period, spent)

    def _bucket(self, name: str, minute: int) -> tuple[int, int]:
        """Requests and tokens of one minute: seen, plus made here (sent or not)."""
        requests = tokens = 0
        seen = self.seen_minute.get(name)
        if seen is not None:
            if seen[0] == minute:
                requests, tokens = seen[2], seen[4]
            elif seen[0] == minute + 1:
                requests, tokens = seen[1], seen[3]
        for counts in (self.minutes, self.sending.minutes if self.sending else None):
            own = counts.get((name, minute)) if counts is not None else None
            if own is not None:
                requests += own[0]
                tokens += own[1]
        return requests, tokens

    def _spent(self, name: str, period: str) -> int:
        seen = self.seen_spend.get(name)
        spent = seen[1] if seen is not None and seen[0] == period else 0
        for counts in (self.spend, self.sending.spend if self.sending else None):
            own = counts.get((name, period)) if counts is not None else None
            if own is not None:
                spent += own[0]
        return spent

    def take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int, period: str,
             period_end_ms: int) -> Counts:
        minute, elapsed = divmod(now_ms, WINDOW_MS)
        self._prune(minute)
        prev_requests, prev_tokens = self._bucket(name, minute - 1)
        requests, tokens = self._bucket(name, minute)
        spent = self._spent(name, period) if budget >= 0 else 0
        refused = exceeds(elapsed, rpm, tpm, budget, prev_requests, requests, prev_tokens, tokens, spent)
        if not refused:
            self.minutes.setdefault((name, minute), [0, 0])[0] += 1
            requests += 1
        return refused, prev_requests, requests, prev_tokens, tokens, spent

    def add(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str, period_end_ms: int) -> None:
        if tokens:
            self.minutes.setdefault((name, now_ms // WINDOW_MS), [0, 0])[1] += tokens
        if cost_micros:
            self.spend.setdefault((name, period), [0, period_end_ms])[0] += cost_micros

    def _prune(self, minute: int) -> None:
        """Once a minute: forget the minutes made here that no window reads any more (a long outage)."""
        if minute <= self._pruned_minute:
            return
        self._pruned_minute = minute
        stale = [b for b in self.minutes if b[1] < minute - 1]
        for bucket in stale:
            del self.minutes[bucket]
        self.pruned += len(stale)

    def batch(self) -> _Batch:
        """The batch to send: the one on its way, or what was made here since (which starts afresh)."""
        if self.sending is None:
            self.sending = _Batch(self.minutes, self.spend, self.pruned)
            self.minutes, self.spend, self.pruned = {}, {}, 0
        return self.sending


class _Unreachable(Exception):
    """The backend cannot take an operation now (inside this module only): count it locally."""


class _Shared(Counters):
    """A kind with a backend shared by processes: the fallback when it is away, and the way back."""

    retry_first_s, retry_max_s = RETRY_FIRST_S, RETRY_MAX_S

    def __init__(self) -> None:
        self._local = _Local()
        self._down = False
        self._recovery: asyncio.Task[None] | None = None
        self._latest_ms = 0

    @property
    def degraded(self) -> bool:
        return self._down

    @abc.abstractmethod
    async def _take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int, period: str) -> Counts:
        """take() on the backend; _Unreachable when it cannot."""

    @abc.abstractmethod
    async def _add(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                   period_end_ms: int) -> tuple[int, int]:
        """add() on the backend: the minute's tokens and the period's spend after it (-1: not touched)."""

    @abc.abstractmethod
    async def _merge(self, batch: _Batch, latest_ms: int) -> int:
        """Add a batch's counts that still count to the backend (at least one write, even when there are
        none: the probe); how many were dropped.  _Unreachable when it cannot."""

    async def take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int,
                   period: str, period_end_ms: int) -> Counts:
        self._latest_ms = max(self._latest_ms, now_ms)
        if not self._down:
            try:
                counts = await self._take(name, now_ms, rpm, tpm, budget, period)
            except _Unreachable as exc:
                self._went_down(exc)
            else:
                self._local.saw(name, now_ms, budget, period, counts)
                return counts
        return self._local.take(name, now_ms, rpm, tpm, budget, period, period_end_ms)

    async def add(self, name: str, now_ms: int, tokens: int, cost_micros: int,
                  period: str, period_end_ms: int) -> None:
        self._latest_ms = max(self._latest_ms, now_ms)
        if not self._down:
            try:
                total_tokens, spent = await self._add(name, now_ms, tokens, cost_micros, period, period_end_ms)
            except _Unreachable as exc:
                self._went_down(exc)
            else:
                self._local.saw_added(name, now_ms, total_tokens, period, spent)
                return
        self._local.add(name, now_ms, tokens, cost_micros, period, period_end_ms)

    def add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                 period_end_ms: int) -> None:
        self._latest_ms = max(self._latest_ms, now_ms)
        if self._down or not self._add_soon(name, now_ms, tokens, cost_micros, period, period_end_ms):
            self._local.add(name, now_ms, tokens, cost_micros, period, period_end_ms)

    @abc.abstractmethod
    def _add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                  period_end_ms: int) -> bool:
        """Send the add on its way, its answer to :meth:`_added`; False when it cannot be sent."""

    def _added(self, op: tuple[Any, ...], result: tuple[int, int] | None, exc: BaseException | None) -> None:
        """The answer to an add sent by :meth:`_add_soon` (``op``: its arguments from the name on)."""
        name, now_ms, tokens, cost_micros, period, period_end_ms = op
        if exc is None and result is not None:
            self._local.saw_added(name, now_ms, result[0], period, result[1])
            return
        if isinstance(exc, _Unreachable):
            self._went_down(exc)
        elif exc is not None:
            log.error("limits: counting the usage of key %r failed: %r", name, exc)
        self._local.add(name, now_ms, tokens, cost_micros, period, period_end_ms)

    def _went_down(self, exc: BaseException) -> None:
        if self._down:
            return
        self._down = True
        log.warning("limits: cannot reach %s (%s); counting in this process only until it is back "
                    "(meanwhile each process enforces the limits on its own)", self.where, exc)
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover(),
                                                                    name="fastroute-counters-recovery")

    async def _recover(self) -> None:
        """Probe until the backend takes the local counts; then say it is back and send what came meanwhile."""
        pause = self.retry_first_s
        while True:
            if pause:
                await asyncio.sleep(pause)
            batch = self._local.batch()
            latest_ms = self._latest_ms
            try:
                await self._merge(batch, latest_ms)
            except Exception as exc:
                if not isinstance(exc, _Unreachable):  # a bug: said, and tried again like an outage
                    log.exception("limits: the counts made in this process could not be added to %s", self.where)
                self._went_down(exc)  # a merge after the way back failed: down again (said once)
                pause = min(max(pause, self.retry_first_s) * 2, self.retry_max_s)
                continue
            self._local.sending = None
            if self._down:
                self._down = False
                minutes, spend, dropped = batch.kept(latest_ms)
                log.warning("limits: %s is back; added what this process counted meanwhile: %d minute(s) and "
                            "%d period(s) of %d key(s); %d minute(s) or period(s) that had ended dropped", self.where,
                            sum(map(len, minutes.values())), sum(map(len, spend.values())),
                            len(minutes.keys() | spend.keys()), dropped + batch.pruned)
            if not self._local:  # counts made while this merge was on its way: send them too
                return
            pause = 0

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        if self._local:
            log.warning("limits: closing with counts made in this process not added to %s", self.where)


# ── redis ─────────────────────────────────────────────────────────────────

#: KEYS: this minute's hash, the previous minute's, the period's spend.
#: ARGV: ms into this minute, rpm, tpm, budget (micros; -1: none), ms to keep this minute's hash.
TAKE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'r', 't')
local prev = redis.call('HMGET', KEYS[2], 'r', 't')
local cr, ct = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
local pr, pt = tonumber(prev[1]) or 0, tonumber(prev[2]) or 0
local rpm, tpm, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local spent = 0
if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[3])) or 0 end
local weight = 59999 - tonumber(ARGV[1])
local refused = 0
if rpm >= 0 and pr * weight + cr * 60000 >= rpm * 60000 then refused = 1 end
if tpm >= 0 and pt * weight + ct * 60000 >= tpm * 60000 then refused = refused + 2 end
if budget >= 0 and spent >= budget then refused = refused + 4 end
if refused == 0 then
  cr = redis.call('HINCRBY', KEYS[1], 'r', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {refused, pr, cr, pt, ct, spent}
"""

#: KEYS: this minute's hash, the period's spend.
#: ARGV: tokens, ms to keep the hash, micros, ms to keep the spend (0: for ever).
#: Answers the minute's tokens and the period's spend after it (-1: not touched).
ADD_LUA = """
local tokens, spent = -1, -1
if tonumber(ARGV[1]) > 0 then
  tokens = redis.call('HINCRBY', KEYS[1], 't', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if tonumber(ARGV[3]) > 0 then
  spent = redis.call('INCRBY', KEYS[2], ARGV[3])
  if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
end
return {tokens, spent}
"""

#: KEYS[1]: the batch's marker for this key name; then the hashes and spends to add to.
#: ARGV[1]: ms to keep the marker; then per key: kind ('m' or 's'), requests or micros, tokens, ms to keep (0: for ever).
#: Adds nothing when the marker is there (this batch was added already: its answer was lost).
MERGE_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  local j = (i - 2) * 4 + 2
  local a, b, ttl = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  if ARGV[j] == 'm' then
    if a > 0 then redis.call('HINCRBY', KEYS[i], 'r', a) end
    if b > 0 then redis.call('HINCRBY', KEYS[i], 't', b) end
  else
    redis.call('INCRBY', KEYS[i], a)
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

#: a minute's hash is kept to the end of the next minute (it is the previous one then), plus this
MINUTE_GRACE_MS = 60_000
#: a period's spend is kept to the period's end, plus this (clocks of other instances a little behind)
PERIOD_GRACE_MS = 3_600_000
MARKER_TTL_MS = 3_600_000


class RedisCounters(_Shared):
    """Counts in Redis, exact across every worker and instance that shares it (one Lua script per operation).

    Keys: ``{prefix}lim:{<name>}:m:<minute>`` (a hash: ``r`` requests, ``t`` tokens) and
    ``{prefix}lim:{<name>}:s:<period>`` (micro-dollars); the name in braces is a hash tag, so one key's
    counts share a cluster slot.  Spoken through fastroute's own RESP client
    (:mod:`fastroute.governance.resp`: one connection, commands pipelined on it; ~25-35 µs of the
    loop's CPU per script against redis-py's 115-240).  The password is read from the env var
    ``password_env`` at start() and appears in no log line and not in ``where``."""

    def __init__(self, url: str, password_env: str | None = None, key_prefix: str = "fastroute:", *,
                 timeout_s: float = 1.0) -> None:
        from fastroute.storage.redis import where

        super().__init__()
        self.url = url
        self.where = where(url)
        self.password_env = password_env
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self._client: Any = None
        self._scripts: tuple[Any, Any, Any] | None = None
        #: adds sent by add_soon and not answered yet; a future drained() waits on for them
        self._adding = 0
        self._idle: asyncio.Future[None] | None = None

    async def start(self) -> None:
        from fastroute.governance.resp import RespClient

        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if not password:
                log.warning("limits: $%s is not set; %s will likely refuse the connection", self.password_env,
                            self.where)
        # no retry here: a command that fails sends this process to its local fallback (a retry
        # could count a request twice), and the probe finds Redis again
        client = self._client = RespClient(self.url, password, timeout_s=self.timeout_s)
        self._scripts = (client.script(TAKE_LUA), client.script(ADD_LUA), client.script(MERGE_LUA))

    async def close(self) -> None:
        await self.drained()  # the adds on their way first
        await super().close()
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to save
                await self._client.close()
            self._client = None

    def _base(self, name: str) -> str:
        return f"{self.key_prefix}lim:{{{name}}}:"

    def _ready(self) -> tuple[Any, Any, Any]:
        if self._scripts is None or self._client is None:
            raise StorageError(f"limits: {self.where} is not started (or closed)")
        return self._scripts

    async def _take(self, name: str, now_ms: int, rpm: int, tpm: int, budget: int, period: str) -> Counts:
        script = self._ready()[0]
        minute, elapsed = divmod(now_ms, WINDOW_MS)
        base = self._base(name)
        keys = (f"{base}m:{minute}", f"{base}m:{minute - 1}", f"{base}s:{period}")
        keep_ms = (minute + 2) * WINDOW_MS + MINUTE_GRACE_MS - now_ms
        try:
            r = await script(keys, (elapsed, rpm, tpm, budget, keep_ms))
        except _resp_errors() as exc:
            raise _Unreachable(_why(exc)) from exc
        return int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])

    async def _add(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                   period_end_ms: int) -> tuple[int, int]:
        script = self._ready()[1]
        keys, args = self._add_call(name, now_ms, tokens, cost_micros, period, period_end_ms)
        try:
            r = await script(keys, args)
        except _resp_errors() as exc:
            raise _Unreachable(_why(exc)) from exc
        return int(r[0]), int(r[1])

    def _add_call(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                  period_end_ms: int) -> tuple[tuple[str, str], tuple[int, int, int, int]]:
        minute = now_ms // WINDOW_MS
        base = self._base(name)
        keep_minute = (minute + 2) * WINDOW_MS + MINUTE_GRACE_MS - now_ms
        keep_period = period_end_ms + PERIOD_GRACE_MS - now_ms if period_end_ms else 0
        return (f"{base}m:{minute}", f"{base}s:{period}"), (tokens, keep_minute, cost_micros, keep_period)

    def _add_soon(self, name: str, now_ms: int, tokens: int, cost_micros: int, period: str,
                  period_end_ms: int) -> bool:
        """Sent with the client's next write (the next request's take, most often) or within
        ``SOON_LINGER_S``: no write, wake-up or task of its own; the reply comes to :meth:`_add_replied`."""
        client = self._client
        if client is None:
            return False
        op = (name, now_ms, tokens, cost_micros, period, period_end_ms)
        self._adding += 1
        client.send_soon(self._ready()[1].encode(*self._add_call(*op)), partial(self._add_replied, op))
        return True

    def _add_replied(self, op: tuple[Any, ...], reply: Any, error: BaseException | None) -> None:
        from fastroute.governance.resp import RespError

        if isinstance(error, RespError) and error.code == "NOSCRIPT":  # Redis restarted: loaded, sent again
            asyncio.get_running_loop().create_task(self._add_again(op), name="fastroute-counters-add")
            return
        if error is None:
            self._added(op, (int(reply[0]), int(reply[1])), None)
        else:
            self._added(op, None, _Unreachable(_why(error)))
        self._answered()

    async def _add_again(self, op: tuple[Any, ...]) -> None:
        try:
            result = await self._add(*op)
        except _Unreachable as exc:
            self._added(op, None, exc)
        else:
            self._added(op, result, None)
        self._answered()

    def _answered(self) -> None:
        self._adding -= 1
        if not self._adding and self._idle is not None:
            self._idle.set_result(None)
            self._idle = None

    async def drained(self) -> None:
        while self._adding:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            if self._client is not None:
                self._client.flush_soon()
            await asyncio.shield(self._idle)

    async def _merge(self, batch: _Batch, latest_ms: int) -> int:
        client = self._client
        if client is None:
            raise _Unreachable("closed")
        script = self._ready()[2]
        minutes, spend, dropped = batch.kept(latest_ms)
        commands: list[Any] = [("SET", f"{self.key_prefix}lim:probe", b"1", "PX", 10_000)]  # a write: Redis takes them again
        for name in minutes.keys() | spend.keys():
            base = self._base(name)
            keys = [f"{base}merged:{batch.id}"]
            args: list[Any] = [MARKER_TTL_MS]
            for minute, requests, tokens in minutes.get(name, ()):
                keys.append(f"{base}m:{minute}")
                args += ["m", requests, tokens, (minute + 2) * WINDOW_MS + MINUTE_GRACE_MS - latest_ms]
            for period, micros, end_ms in spend.get(name, ()):
                keys.append(f"{base}s:{period}")
                args += ["s", micros, 0, end_ms + PERIOD_GRACE_MS - latest_ms if end_ms else 0]
            commands.append(script.command(keys, args))
        try:
            await client.execute_many(commands)
        except _resp_errors() as exc:
            raise _Unreachable(_why(exc)) from exc
        return dropped


def _why(exc: BaseException) -> str:
    """What a log line says of a Redis failure: Redis's own error code (``WRONGPASS``, ``OOM``,
    ``READONLY``), else the kind of failure (``RespUnavailable``, ``RespTimeout``)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def _resp_errors() -> tuple[type[BaseException], ...]:
    """What the RESP client raises for a Redis that is away or refuses us (a wrong password, out of
    memory, read-only)."""
    from fastroute.governance.resp import RespException

    return (RespException,)


def _redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away or refuses us raises (a wrong password, out of memory, read-only)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)
