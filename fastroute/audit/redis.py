"""The audit log in Redis, shared by every fastroute instance (and every worker) that points at it.

The same queue, writer and semantics as the SQLite log (:mod:`.sqlite`), with a task on the
worker's event loop in place of the writer thread:

- on the request path, :meth:`RedisAuditLog.record`: an append to a deque, nothing else;
- one writer task, started by ``start()``: every ``interval_s`` (50 ms), or at once for a
  ``flush()``, it takes what has queued and writes it, up to ``batch_max`` (50) records per Lua
  script — one script per batch, so that a reader never sees a record without its index
  entries and its sums.  While Redis cannot be reached or refuses the writes (a wrong password,
  out of memory, a read-only replica), the batch stays in hand and is tried again 50 ms later,
  then 100 ms, … up to every 2 s (at once for a ``flush()``, which raises StorageUnavailable
  while it fails); the log says once that it fails and once that it is back.  Meanwhile the
  queue fills up to ``max_queued`` records (the batch in hand counted) and new records are
  dropped, said once when it starts and with their count when it ends.  A record Redis cannot
  take (a field of the wrong type, an integer past 2**53: the caller's bug) is skipped and
  said.  With ``retention_days``, the same task removes older records at its first turn and
  every ``retention_interval_s`` (an hour), ``PURGE_CHUNK`` records per script and at most
  ``RETENTION_CHUNKS`` scripts per turn, so that the writes of every instance go on between them;
- queries are awaited on the caller's task, through the client's pool (never the writer's
  turn), in scripts that each look at ``PAGE`` index entries or ``SUM_FIELDS`` hourly sums at
  most (Redis runs one script at a time: the rate limits of every instance wait behind a long
  one).

Keys, all under ``P = key_prefix + "audit:"``; a client-chosen name (key name, model, session)
is in a key or field only as the hex of its UTF-8, so ``:``, ``*``, spaces or braces in it can
neither collide nor reach outside its key:

- ``P id``: the last record id (INCRBY); an id is written as 15 zero-padded digits, so that its
  order as a string is its order of arrival;
- ``P rec``: a hash, id → the record (an orjson array of :data:`~.record.FIELDS`);
- ``P t``: a sorted set of every id, scored by timestamp (ms); ``P k:<hex key name>``,
  ``P m:<hex model>``, ``P s:<hex session>``: the same, per name (a record without a key name
  or session is in none).  Ties of a score are ordered by member, so by id: newest first with
  ZREVRANGE;
- ``P u:<hour>``: a hash of the hour's sums per key name and model: field ``<hex key>:<hex
  model>``, value ``"requests prompt completion cached cost"`` (one field per group rather than
  five HINCRBY counters: a fifth of the fields to keep and to read; exact while a sum stays
  below 2**53, which no record may pass); ``P v:<hour>``: the same per key name and session.  No key name is ``-``,
  which no hex is (an empty one is ``""``, so that ``usage(key="")`` sums exactly the records
  with that name, as the memory log does); no model or no session is ``""``.  ``P hours``: a sorted set of the hours
  that have sums.  The write and purge scripts keep them, in the same scripts that add and
  remove the records (the writer adds up its batch's sums first: one update per group);
- ``P w:<writer>``: the last batch number a writer (one per ``start()``) has written, for a day:
  a batch sent again after its answer was lost (a timeout) is not written twice.

``logs()`` walks the most selective index its filters name (the smallest ZCOUNT in the range),
newest first, from the rank of the last entry seen (ZREVRANK: exact however the index moves
meanwhile), checks each id against the other filters' indexes (ZSCORE) and stops at ``limit``.
``usage()`` splits its range like the SQLite log's (:func:`.sqlite.usage_query`): whole hours
from the hourly sums, the parts of an hour at either end from the records, walked the same way.
A query is not a snapshot across its pages: what is written meanwhile may or may not be counted.
The scripts build some key names from ``P`` (the records' names), so they need one Redis, not a
Redis Cluster.

Records are readable by every instance once written: within ``interval_s`` of ``record()``, at
once after ``flush()``.  ``close()`` writes everything queued (one more try when Redis is away;
what then cannot be written is counted in the log).  The password comes from the env var
``password_env`` at ``start()`` and appears in no log line, no error and not in ``where``.

Measured (``benchmarks/test_bench_audit.py``; Python 3.11, redis-py 8.1 without hiredis,
redis-server 7.0 on the same 2 cores, shared with other jobs, uvloop, medians of four runs):
``record()`` 0.6 µs, as the SQLite log's; a record written 46–155 µs by the machine's load
(SQLite's on the same runs: 25–38 µs): about 20 µs of this worker's time (checking and
encoding it, redis-py sending the batch) and 60–80 µs of Redis' (a hash field and four
sorted-set entries; one writer takes about 10,000 records a second here), so that a 200-record
script holds Redis 12–16 ms.  On 100,000 records: ``logs(key=…)``
1.1–1.8 ms for 100 rows, 8–10 ms for 1,000; ``usage()`` 6–7 ms over everything (the hourly
sums, added up by Redis); 170–520 ms over a range whose ends cut two hours holding 18,000
records, which are read (1,000 a script) — as with SQLite, a caller that can should pass bounds
on the hour.  Redis holds about 680 bytes per record (its JSON and four index entries), plus
the hourly sums: size ``retention_days`` by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from fastroute.audit.queued import Queued
from fastroute.audit.record import (
    FIELDS,
    AuditRecord,
    GroupBy,
    check_group,
    clamp_limit,
    usage_order,
    usage_row,
    utc_day,
)
from fastroute.storage.base import StorageError, StorageUnavailable

log = logging.getLogger("fastroute.audit")

#: records written by one script at most: Redis runs nothing else meanwhile (2–16 ms for 200, by
#: the machine's load), and the rate limits of every instance wait behind it; 50 keeps that short
BATCH_MAX = 50
#: seconds between the writer's turns: how late a record may reach Redis
INTERVAL_S = 0.05
#: seconds to connect, and to wait for an answer
TIMEOUT_S = 1.0
#: records waiting for Redis, at most (beyond: dropped, with a warning)
MAX_QUEUED = 100_000
#: seconds between retention purges
RETENTION_INTERVAL_S = 3600.0
#: records removed per script while purging, and scripts per retention turn
PURGE_CHUNK = 200
RETENTION_CHUNKS = 50
#: the pause between tries while Redis cannot be written: doubled each time, up to the maximum
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
#: index entries one query script looks at, at most; hours, and fields of hourly sums (unless one
#: hour holds more), one script of usage() adds up at most
PAGE = 1000
HOURS_PAGE = 744
SUM_FIELDS = 5000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: how long a writer's last batch number is kept (a batch retried later may be written twice)
MARK_TTL_MS = DAY_MS
#: integers Redis' Lua (doubles) sums exactly
INT_LIMIT = 2**53

_AT = {name: i for i, name in enumerate(FIELDS)}
_ROW = operator.attrgetter(*FIELDS)
_TEXT_AT = tuple(_AT[n] for n in ("request_id", "key_name", "session", "model", "provider", "sent_model", "error",
                                       "cache"))
_INT_AT = tuple(_AT[n] for n in ("timestamp", "prompt_tokens", "completion_tokens", "cached_tokens", "status"))
_FLOAT_AT = tuple(_AT[n] for n in ("latency_ms", "ttft_ms"))
_BOOL_AT = tuple(_AT[n] for n in ("stream", "estimated"))
#: the integers that may be None (the tokens and the timestamp are summed or indexed: never)
_MAY_BE_NONE = frozenset(_AT[n] for n in ("status", "cost_micros"))
_TS, _KEY, _SESSION, _MODEL = _AT["timestamp"], _AT["key_name"], _AT["session"], _AT["model"]
_STATUS, _LATENCY, _TTFT, _STREAM, _ESTIMATED = (_AT["status"], _AT["latency_ms"], _AT["ttft_ms"], _AT["stream"],
                                                 _AT["estimated"])
_TEXT_TYPES = frozenset((str, type(None)))
_PROMPT, _COMPLETION, _CACHED, _COST = (_AT["prompt_tokens"], _AT["completion_tokens"], _AT["cached_tokens"],
                                        _AT["cost_micros"])

#: what the scripts share: ZADD / ZREM / HSET / HDEL with many members, in calls of at most 500
#: pairs (Lua's unpack() has a limit); an hourly sum, "requests prompt completion cached cost"
_LUA_COMMON = """
local function many(cmd, key, items)
  for s = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, s, math.min(s + 999, #items)))
  end
end
local function add_sum(h, g, r, p, c, k, m)
  local v = redis.call('HGET', h, g)
  if v then
    local a, b, d, e, f = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    r, p, c, k, m = r + tonumber(a), p + tonumber(b), c + tonumber(d), k + tonumber(e), m + tonumber(f)
  end
  if r <= 0 then
    redis.call('HDEL', h, g)
  else
    redis.call('HSET', h, g, string.format('%d %d %d %d %d', r, p, c, k, m))
  end
end
"""

#: ARGV: prefix, writer, batch number, a JSON array [[per record: timestamp, key index, model
#: index, session index ("" for none)], [per sum: hash, group, 5 numbers], [hours]], then the
#: records.  Returns the records written (0: this batch was written before).
_WRITE_LUA = f"local MARK_TTL = {MARK_TTL_MS}\n" + _LUA_COMMON + """
local P = ARGV[1]
local mark = P .. 'w:' .. ARGV[2]
if tonumber(redis.call('GET', mark) or '0') >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', mark, ARGV[3], 'PX', MARK_TTL)
local meta = cjson.decode(ARGV[4])
local index, sums, hours = meta[1], meta[2], meta[3]
local n = #ARGV - 4
local first = redis.call('INCRBY', P .. 'id', n) - n
local rec, all, by = {}, {}, {}
for i = 1, n do
  local id = string.format('%015d', first + i)
  local a = 4 * i - 3
  local ts = index[a]
  rec[#rec + 1] = id
  rec[#rec + 1] = ARGV[4 + i]
  all[#all + 1] = ts
  all[#all + 1] = id
  for j = a + 1, a + 3 do
    local name = index[j]
    if name ~= '' then
      local t = by[name]
      if t == nil then t = {}; by[name] = t end
      t[#t + 1] = ts
      t[#t + 1] = id
    end
  end
end
many('HSET', P .. 'rec', rec)
many('ZADD', P .. 't', all)
for name, t in pairs(by) do many('ZADD', P .. name, t) end
for a = 1, #sums, 7 do
  add_sum(P .. sums[a], sums[a + 1], sums[a + 2], sums[a + 3], sums[a + 4], sums[a + 5], sums[a + 6])
end
for _, hour in ipairs(hours) do redis.call('ZADD', P .. 'hours', hour, hour) end
return n
"""

#: ARGV: prefix, bound, chunk.  Removes the oldest ``chunk`` records with timestamp < bound, their
#: index entries and their part of the hourly sums (emptied sums and hours go); returns how many.
_PURGE_LUA = (f"local TS, KEY, SESSION, MODEL = {_TS + 1}, {_KEY + 1}, {_SESSION + 1}, {_MODEL + 1}\n"
              f"local PROMPT, COMPLETION, CACHED, COST = {_PROMPT + 1}, {_COMPLETION + 1}, {_CACHED + 1}, {_COST + 1}\n"
              f"local HOUR_MS = {HOUR_MS}\n") + _LUA_COMMON + """
local P = ARGV[1]
local rec = P .. 'rec'
local ids = redis.call('ZRANGEBYSCORE', P .. 't', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return 0 end
local null = cjson.null
local hexes = {}
local function hex(s)
  local h = hexes[s]
  if h == nil then
    h = string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end)
    hexes[s] = h
  end
  return h
end
local sums, by = {}, {}
local function take(hash, group, r)
  local groups = sums[hash]
  if groups == nil then groups = {}; sums[hash] = groups end
  local s = groups[group]
  if s == nil then s = {0, 0, 0, 0, 0}; groups[group] = s end
  local cost = r[COST]
  if cost == null then cost = 0 end
  s[1] = s[1] - 1
  s[2] = s[2] - r[PROMPT]
  s[3] = s[3] - r[COMPLETION]
  s[4] = s[4] - r[CACHED]
  s[5] = s[5] - cost
end
local function unindex(name, id)
  local t = by[name]
  if t == nil then t = {}; by[name] = t end
  t[#t + 1] = id
end
for s = 1, #ids, 1000 do
  local records = redis.call('HMGET', rec, unpack(ids, s, math.min(s + 999, #ids)))
  for i = 1, #records do
    local id, blob = ids[s + i - 1], records[i]
    if blob then
      local r = cjson.decode(blob)
      local key, model, session = r[KEY], r[MODEL], r[SESSION]
      local kh, mh, sh = '-', '', ''
      if key ~= null then kh = hex(key); unindex('k:' .. kh, id) end
      if model ~= null then mh = hex(model); unindex('m:' .. mh, id) end
      if session ~= null then sh = hex(session); unindex('s:' .. sh, id) end
      local hour = string.format('%d', math.floor(r[TS] / HOUR_MS))
      take('u:' .. hour, kh .. ':' .. mh, r)
      take('v:' .. hour, kh .. ':' .. sh, r)
    end
  end
end
many('HDEL', rec, ids)
many('ZREM', P .. 't', ids)
for name, t in pairs(by) do many('ZREM', P .. name, t) end
for hash, groups in pairs(sums) do
  local h = P .. hash
  for g, s in pairs(groups) do add_sum(h, g, s[1], s[2], s[3], s[4], s[5]) end
  if string.sub(hash, 1, 2) == 'u:' and redis.call('EXISTS', h) == 0 then
    redis.call('ZREM', P .. 'hours', string.sub(hash, 3))
  end
end
return #ids
"""

#: KEYS: hourly sums, oldest first.  ARGV: how to group ("k": by key name, "n": by the other
#: name, "h": one sum per hash), the key name's hex to keep ("" and ARGV[3] "0": every one), the
#: fields to read at most (a whole hash at least).  Returns how many hashes it read, then per
#: group: the group (by "h": the hash's place in KEYS), its sum.
_SUMS_LUA = """
local mode, want, filter, budget = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
local sums, order = {}, {}
local seen, done = 0, 0
for i = 1, #KEYS do
  if done > 0 and seen + redis.call('HLEN', KEYS[i]) > budget then break end
  local fields = redis.call('HGETALL', KEYS[i])
  seen = seen + #fields / 2
  for j = 1, #fields, 2 do
    local f = fields[j]
    local colon = string.find(f, ':', 1, true)
    local kh = string.sub(f, 1, colon - 1)
    if not filter or kh == want then
      local g
      if mode == 'k' then g = kh elseif mode == 'n' then g = string.sub(f, colon + 1) else g = tostring(i) end
      local s = sums[g]
      if s == nil then s = {0, 0, 0, 0, 0}; sums[g] = s; order[#order + 1] = g end
      local a, b, c, d, e = string.match(fields[j + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
      s[1], s[2], s[3] = s[1] + tonumber(a), s[2] + tonumber(b), s[3] + tonumber(c)
      s[4], s[5] = s[4] + tonumber(d), s[5] + tonumber(e)
    end
  end
  done = i
end
local out = {done}
for _, g in ipairs(order) do
  local s = sums[g]
  out[#out + 1] = g
  out[#out + 1] = string.format('%d %d %d %d %d', s[1], s[2], s[3], s[4], s[5])
end
return out
"""

#: KEYS: the index walked, the records' hash, the indexes an id must also be in.  ARGV: the last id
#: seen ("" at first), until ("" for none), since ("" for none), records wanted, entries to look
#: at.  Returns the id to go on from ("" at the end), and the records found, newest first, as one
#: JSON array (one string to parse rather than one answer per record: redis-py's parser, when
#: hiredis is not installed, is Python, on the event loop).
_PAGE_LUA = """
local idx, rec = KEYS[1], KEYS[2]
local cursor, want, budget = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local since = tonumber(ARGV[3])
local start = 0
if cursor ~= '' then
  local rank = redis.call('ZREVRANK', idx, cursor)
  if not rank then return {''} end
  start = rank + 1
elseif ARGV[2] ~= '' then
  start = redis.call('ZCOUNT', idx, ARGV[2], '+inf')
end
local entries = redis.call('ZREVRANGE', idx, start, start + budget - 1, 'WITHSCORES')
local more = #entries == 2 * budget
local found, last = {}, ''
for i = 1, #entries, 2 do
  local id = entries[i]
  if since and tonumber(entries[i + 1]) < since then more = false; break end
  last = id
  local keep = true
  for j = 3, #KEYS do
    if not redis.call('ZSCORE', KEYS[j], id) then keep = false; break end
  end
  if keep then
    found[#found + 1] = id
    if #found >= want then more = true; break end
  end
end
local records = {}
if #found > 0 then
  for _, r in ipairs(redis.call('HMGET', rec, unpack(found))) do
    if r then records[#records + 1] = r end
  end
end
return {more and last or '', '[' .. table.concat(records, ',') .. ']'}
"""


def _hex(name: str) -> str:
    return name.encode().hex()


def _named(kind: str, name: str) -> tuple[str, str]:
    """A name's hex, and the key of its index (``kind`` then the hex)."""
    h = name.encode().hex()
    return h, kind + h


class _Refused(ValueError):
    """A record Redis cannot take: the caller's bug; skipped."""


def _checked(row: tuple[Any, ...]) -> tuple[Any, ...] | list[Any]:
    """The record's fields as they are stored; _Refused when one has the wrong type."""
    ts, prompt, completion, cached, cost = row[_TS], row[_PROMPT], row[_COMPLETION], row[_CACHED], row[_COST]
    if (type(ts) is int and type(prompt) is int and type(completion) is int and type(cached) is int
            and (cost is None or type(cost) is int) and type(row[_STATUS]) is int
            and type(row[_LATENCY]) is float and (row[_TTFT] is None or type(row[_TTFT]) is float)
            and type(row[_STREAM]) is bool and type(row[_ESTIMATED]) is bool
            and -INT_LIMIT <= min(ts, prompt, completion, cached, cost or 0)
            and max(ts, prompt, completion, cached, cost or 0) <= INT_LIMIT
            and _TEXT_TYPES.issuperset(map(type, operator.itemgetter(*_TEXT_AT)(row)))):
        return row  # the common case, as the recorder builds it
    out = list(row)
    for i in _TEXT_AT:
        if out[i] is not None and not isinstance(out[i], str):
            raise _Refused(f"{FIELDS[i]} is a {type(out[i]).__name__}, not a string")
    for i in (*_INT_AT, _COST):
        value = out[i]
        if value is None and i in _MAY_BE_NONE:
            continue
        if not isinstance(value, int) or not -INT_LIMIT <= value <= INT_LIMIT:
            raise _Refused(f"{FIELDS[i]} is not an integer within ±2**53")
        out[i] = int(value)
    for i in _FLOAT_AT:
        value = out[i]
        if value is None:
            continue
        if not isinstance(value, (int, float)):
            raise _Refused(f"{FIELDS[i]} is a {type(value).__name__}, not a number")
        out[i] = float(value)
    for i in _BOOL_AT:
        try:
            out[i] = bool(out[i])
        except Exception as exc:  # an object without a truth value
            raise _Refused(f"{FIELDS[i]} is a {type(out[i]).__name__}, not a bool") from exc
    return out


class _Op:
    """A request to the writer task: ``flush``, ``purge`` (``arg``: the bound) or ``stop``."""

    __slots__ = ("arg", "future", "kind")

    def __init__(self, kind: str, arg: int = 0) -> None:
        self.kind = kind
        self.arg = arg
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class RedisAuditLog(Queued):
    def __init__(self, url: str, password_env: str | None = None, key_prefix: str = "fastroute:",
                 retention_days: float | None = None, *, max_queued: int = MAX_QUEUED, batch_max: int = BATCH_MAX,
                 interval_s: float = INTERVAL_S, timeout_s: float = TIMEOUT_S,
                 retention_interval_s: float = RETENTION_INTERVAL_S) -> None:
        from fastroute.storage.redis import where

        super().__init__(max_queued)
        self._url = url  # may hold a password: never shown
        self.where = where(url)
        self.password_env = password_env
        self.key_prefix = key_prefix
        self.retention_days = retention_days
        self.batch_max = batch_max
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.retention_interval_s = retention_interval_s
        self._p = key_prefix + "audit:"
        #: the batch in hand, encoded: the script's arguments and the records in it
        self._batch: tuple[list[Any], int] | None = None
        self._seq = 0
        self._ops: deque[_Op] = deque()
        self._writer_done = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._scripts: tuple[Any, Any, Any, Any] | None = None
        self._writer_id = ""

    # ── the event loop's side ───────────────────────────────────────────────

    async def start(self) -> None:
        if self._task is not None or self._closed:
            raise StorageError(f"audit: {self.where} is already {'closed' if self._closed else 'started'}")
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if not password:
                log.warning("audit: $%s is not set; %s will likely refuse the connection", self.password_env,
                            self.where)
        # one quick retry (a pooled connection Redis closed; a batch sent twice is written once)
        self._client = redis.from_url(self._url, password=password, socket_connect_timeout=self.timeout_s,
                                      socket_timeout=self.timeout_s, health_check_interval=15,
                                      retry=Retry(NoBackoff(), 1))
        client = self._client
        self._scripts = (client.register_script(_WRITE_LUA), client.register_script(_PURGE_LUA),
                         client.register_script(_PAGE_LUA), client.register_script(_SUMS_LUA))
        self._writer_id = os.urandom(8).hex()  # here, not when built: after the fork, one per worker
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fastroute-audit-redis")

    async def flush(self) -> None:
        if self._task is None:
            raise self._not_open()
        op = _Op("flush")
        if not self._send(op):
            return  # the writer has stopped: closed, everything written then
        await op.future

    async def purge(self, older_than_ms: int) -> int:
        if self._task is None or self._closed:
            raise self._not_open()
        op = _Op("purge", int(older_than_ms))
        if not self._send(op):
            raise self._not_open()
        return await op.future

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bound = 0
        if self._task is not None:
            self._send(_Op("stop"))  # after every queued record: they are written first
            await asyncio.shield(self._task)
        elif self._pending:
            log.warning("audit: %s closed before it started; %d record(s) not written",
                        self.where, len(self._pending))
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to save
                await self._client.aclose()
            self._client = None

    def _send(self, op: _Op) -> bool:
        """Hand ``op`` to the writer; False when it has stopped."""
        if self._writer_done or self._wake is None:
            return False
        self._ops.append(op)
        self._wake.set()
        return True

    def _unavailable(self, exc: BaseException, doing: str) -> StorageUnavailable:
        if isinstance(exc, _connection_errors()):
            return StorageUnavailable(f"audit: cannot {doing} {self.where}: cannot reach it ({type(exc).__name__})")
        return StorageUnavailable(f"audit: cannot {doing} {self.where}: it answered {type(exc).__name__}")

    # ── queries (on the caller's task) ──────────────────────────────────────

    def _ready(self) -> tuple[Any, Any, Any, Any]:
        if self._scripts is None or self._closed:
            raise self._not_open()
        return self._scripts

    async def logs(self, key: str | None = None, model: str | None = None, since: int | None = None,
                   until: int | None = None, limit: int = 100, *, session: str | None = None) -> list[AuditRecord]:
        self._ready()
        limit = clamp_limit(limit)
        if not limit:
            return []
        p = self._p
        indexes = [p + kind + _hex(name) for kind, name in (("k:", key), ("m:", model), ("s:", session))
                   if name is not None]
        found: list[AuditRecord] = []
        try:
            if len(indexes) > 1:  # the fewest entries in the range first: walked, the others checked
                pipe = self._client.pipeline(transaction=False)
                for index in indexes:
                    pipe.zcount(index, "-inf" if since is None else int(since),
                                "+inf" if until is None else f"({int(until)}")
                counts = await pipe.execute()
                if min(counts) == 0:
                    return []
                indexes = [index for _, index in sorted(zip(counts, indexes))]
            async for records in self._walk(indexes[0] if indexes else p + "t", indexes[1:], since, until, limit):
                found.extend(AuditRecord(*r) for r in records)
        except _redis_errors() as exc:
            raise self._unavailable(exc, "read") from exc
        return found

    async def _walk(self, index: str, checks: list[str], since: int | None, until: int | None,
                    limit: int | None) -> AsyncIterator[list[list[Any]]]:
        """The records of ``index`` with ``since <= timestamp < until`` that are in every index of
        ``checks`` too, newest first, a page at a time; up to ``limit`` (None: all)."""
        page = self._ready()[2]
        keys = [index, self._p + "rec", *checks]
        until_arg = "" if until is None else int(until)
        since_arg = "" if since is None else int(since)
        cursor: bytes | str = ""
        found = 0
        while limit is None or found < limit:
            want = PAGE if limit is None else limit - found
            out = await page(keys=keys, args=[cursor, until_arg, since_arg, want, PAGE if checks else want])
            cursor = out[0]
            records = orjson.loads(out[1])
            found += len(records)
            yield records
            if not cursor:
                return

    async def usage(self, since: int | None = None, until: int | None = None, group_by: GroupBy = "key",
                    key: str | None = None) -> list[dict[str, Any]]:
        check_group(group_by)
        self._ready()
        since = None if since is None else int(since)
        until = None if until is None else int(until)
        sums: dict[Any, list[int]] = {}
        first = None if since is None else -(-since // HOUR_MS)  # the first whole hour
        end = None if until is None else until // HOUR_MS  # the hours before this one are whole
        try:
            if first is not None and end is not None and first >= end:
                await self._sum_records(sums, group_by, key, since, until)
            else:
                if since is not None and first is not None and since < first * HOUR_MS:
                    await self._sum_records(sums, group_by, key, since, first * HOUR_MS)
                await self._sum_hours(sums, group_by, key, first, end)
                if until is not None and end is not None and end * HOUR_MS < until:
                    await self._sum_records(sums, group_by, key, end * HOUR_MS, until)
        except _redis_errors() as exc:
            raise self._unavailable(exc, "read") from exc
        rows = [usage_row(group_by, group, *s) for group, s in sums.items()]
        rows.sort(key=lambda row: usage_order(row, group_by))
        return rows

    async def _sum_records(self, sums: dict[Any, list[int]], group_by: str, key: str | None, since: int,
                           until: int) -> None:
        index = self._p + ("t" if key is None else "k:" + _hex(key))
        async for records in self._walk(index, [], since, until, None):
            for r in records:
                if group_by == "key":
                    group: Any = r[_KEY] or None
                elif group_by == "model":
                    group = r[_MODEL] or ""
                elif group_by == "session":
                    group = r[_SESSION] or None
                else:
                    group = utc_day(r[_TS])
                s = sums.get(group)
                if s is None:
                    s = sums[group] = [0, 0, 0, 0, 0]
                s[0] += 1
                s[1] += r[_PROMPT]
                s[2] += r[_COMPLETION]
                s[3] += r[_CACHED]
                s[4] += r[_COST] or 0

    async def _sum_hours(self, sums: dict[Any, list[int]], group_by: str, key: str | None, first: int | None,
                         end: int | None) -> None:
        """Add the hourly sums of the hours ``first <= hour < end``, summed by Redis a page at a time."""
        assert self._scripts is not None
        script = self._scripts[3]
        hours = await self._client.zrangebyscore(self._p + "hours", "-inf" if first is None else first,
                                                 "+inf" if end is None else f"({end}")
        prefix = self._p + ("v:" if group_by == "session" else "u:")
        mode = {"key": "k", "day": "h"}.get(group_by, "n")
        filter_args = ["", "0"] if key is None else [_hex(key), "1"]
        i = 0
        while i < len(hours):
            page = hours[i:i + HOURS_PAGE]
            out = await script(keys=[prefix + h.decode() for h in page], args=[mode, *filter_args, SUM_FIELDS])
            for j in range(1, len(out), 2):
                if mode == "h":
                    group: Any = utc_day(int(page[int(out[j]) - 1]) * HOUR_MS)
                else:
                    group = _group(group_by, out[j])
                s = sums.get(group)
                if s is None:
                    s = sums[group] = [0, 0, 0, 0, 0]
                for n, value in enumerate(out[j + 1].split()):
                    s[n] += int(value)
            i += int(out[0])

    # ── the writer task ─────────────────────────────────────────────────────

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        wake = self._wake
        delay, pause = self.interval_s, RETRY_MIN_S
        failing = False
        written_before = 0
        next_retention = time.monotonic()  # at the first turn, then every retention_interval_s
        try:
            while True:
                if not wake.is_set():
                    timer = loop.call_later(delay, wake.set)
                    try:
                        await wake.wait()
                    finally:
                        timer.cancel()
                wake.clear()
                ops = list(self._ops)
                self._ops.clear()
                stop = any(op.kind == "stop" for op in ops)
                try:
                    await self._write_out()  # every record queued before these ops
                except _redis_errors() as exc:  # away, a wrong password, out of memory, read-only
                    if not failing:
                        failing, written_before = True, self.written
                        self._say_failing(exc)
                    self._fail(ops, self._unavailable(exc, "write to"))
                    if stop:
                        log.warning("audit: closing with %d record(s) not written to %s",
                                    self._held + len(self._pending), self.where)
                        return
                    delay, pause = pause, min(pause * 2, RETRY_MAX_S)
                    continue
                except Exception as exc:  # a bug, not Redis: the batch in hand is lost, the writer goes on
                    log.exception("audit: a batch of %d record(s) for %s could not be written", self._held,
                                  self.where)
                    self._batch, self._held = None, 0
                    self._fail(ops, StorageUnavailable(f"audit: cannot write to {self.where} ({type(exc).__name__})"))
                    if stop:
                        return
                    continue
                if failing:
                    log.warning("audit: %s is back; %d record(s) that waited are written", self.where,
                                self.written - written_before)
                    failing = False
                delay, pause = self.interval_s, RETRY_MIN_S
                for op in ops:
                    if op.future.done():
                        continue  # its caller is gone
                    if op.kind == "flush":
                        op.future.set_result(None)
                    elif op.kind == "purge":
                        try:
                            removed = (await self._purge(op.arg))[0]
                        except _redis_errors() as exc:
                            if not op.future.done():
                                op.future.set_exception(self._unavailable(exc, "purge"))
                        else:
                            if not op.future.done():
                                op.future.set_result(removed)
                if self.retention_days is not None and time.monotonic() >= next_retention:
                    more = await self._retain()
                    next_retention = time.monotonic() + (0.0 if more else self.retention_interval_s)
                if stop:
                    return
        finally:
            self._writer_done = True
            ops = list(self._ops)
            self._ops.clear()
            self._settle_left(ops)

    def _say_failing(self, exc: BaseException) -> None:
        if isinstance(exc, _connection_errors()):
            log.warning("audit: cannot reach %s (%s); records wait in memory (up to %d) and are tried again",
                        self.where, type(exc).__name__, self.max_queued)
        else:
            log.warning("audit: %s refuses the records (%s); they wait in memory (up to %d) and are tried again",
                        self.where, type(exc).__name__, self.max_queued)

    async def _write_out(self) -> None:
        """Write the batch in hand, then what is queued now, ``batch_max`` records per script."""
        pending = self._pending
        todo = len(pending)  # not what comes meanwhile: the waiting ops are answered first
        assert self._scripts is not None
        write = self._scripts[0]
        while True:
            if self._batch is None:
                n = min(todo, self.batch_max)
                if n <= 0:
                    return
                todo -= n
                self._held = n  # before taking them: the bound counts them all the while
                self._seq += 1
                self._batch = self._encode([pending.popleft() for _ in range(n)], self._seq)
            args, count = self._batch
            if count:
                await write(args=args)
            self.written += count
            self._batch = None
            self._held = 0

    def _encode(self, batch: list[Any], seq: int) -> tuple[list[Any], int]:
        """The write script's arguments for ``batch`` (numbered ``seq``), and the records in them;
        a record Redis cannot take is skipped and said."""
        blobs: list[bytes] = []
        index: list[str] = []
        sums: dict[tuple[str, str], list[int]] = {}  # (hash, group) -> requests, tokens…, cost
        # a name -> its hex and its index (none: "-" for a key name, "" else; no index)
        keys: dict[Any, tuple[str, str]] = {None: ("-", "")}
        models: dict[Any, tuple[str, str]] = {None: ("", "")}
        sessions: dict[Any, tuple[str, str]] = {None: ("", "")}
        for rec in batch:
            try:
                row = _checked(_ROW(rec))
                blob = orjson.dumps(row)
            except AttributeError:
                log.error("audit: not an AuditRecord (%s); skipped", type(rec).__name__)
                continue
            except (_Refused, TypeError) as exc:  # TypeError: a string orjson refuses (a lone surrogate)
                log.error("audit: a record for %s could not be written (%s); skipped: %r", self.where, exc,
                          _ROW(rec)[:2])
                continue
            blobs.append(blob)
            ts = row[_TS]
            key, model, session = row[_KEY], row[_MODEL], row[_SESSION]
            kh, ki = keys.get(key) or keys.setdefault(key, _named("k:", key))
            mh, mi = models.get(model) or models.setdefault(model, _named("m:", model))
            sh, si = sessions.get(session) or sessions.setdefault(session, _named("s:", session))
            index += (str(ts), ki, mi, si)
            hour = ts // HOUR_MS
            numbers = (row[_PROMPT], row[_COMPLETION], row[_CACHED], row[_COST] or 0)
            for group in ((f"u:{hour}", f"{kh}:{mh}"), (f"v:{hour}", f"{kh}:{sh}")):
                s = sums.get(group)
                if s is None:
                    sums[group] = [1, *numbers]
                else:
                    s[0] += 1
                    s[1] += numbers[0]
                    s[2] += numbers[1]
                    s[3] += numbers[2]
                    s[4] += numbers[3]
        flat: list[Any] = []
        hours = set()
        for (table, group), s in sums.items():
            flat += (table, group, *s)
            hours.add(table[2:])
        return [self._p, self._writer_id, seq, orjson.dumps([index, flat, sorted(hours)]), *blobs], len(blobs)

    async def _purge(self, older_than_ms: int, max_chunks: int = 0) -> tuple[int, bool]:
        """Remove records older than the bound (their index entries and hourly sums), PURGE_CHUNK per
        script, so that the other instances' writes get their turn between them; how many, and
        whether some are left (after ``max_chunks`` scripts)."""
        assert self._scripts is not None
        purge = self._scripts[1]
        total = chunks = 0
        while True:
            n = int(await purge(args=[self._p, older_than_ms, PURGE_CHUNK]))
            total += n
            chunks += 1
            if n < PURGE_CHUNK:
                return total, False
            if max_chunks and chunks >= max_chunks:
                return total, True

    async def _retain(self) -> bool:
        """One retention turn; True when older records are left for the next one."""
        assert self.retention_days is not None
        cutoff = time.time_ns() // 1_000_000 - int(self.retention_days * DAY_MS)
        try:
            removed, more = await self._purge(cutoff, RETENTION_CHUNKS)
        except _redis_errors() as exc:
            log.warning("audit: could not purge old records of %s (%s); trying again later", self.where,
                        type(exc).__name__)
            return False
        if removed:
            log.info("audit: %d record(s) older than %g days purged from %s", removed, self.retention_days,
                     self.where)
        return more


def _group(group_by: str, name: bytes) -> Any:
    """The group of a sum Redis added up: the hex of a key name (none: ``-``), a model or a session."""
    if name == b"-":
        return None
    text = bytes.fromhex(name.decode()).decode()
    return text if group_by == "model" else text or None


def _redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away or refuses us raises (a wrong password, out of memory, read-only)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away raises (a wrong password included: the connection is refused)."""
    from redis.exceptions import ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError, OSError)
