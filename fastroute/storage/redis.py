"""The shared store: Redis, for many workers on many machines (``redis.asyncio``).

``SET key value PX ms`` (the time to live in milliseconds, not ``EX``
seconds: TTLs are floats, and a put queued while Redis was away is written
with what is left of its time), ``GET``, ``DEL``; every key starts with
``key_prefix``.  A put never waits on Redis: it goes into a bounded queue (and
into :class:`~.base.Pending`, so this worker reads it at once) that one task
sends in pipelined batches.  When Redis is away the log says so once, puts
wait in the queue (beyond ``max_queued`` puts or ``max_queued_bytes`` they are
dropped, counted, with a warning), reads of other keys fail at once with
:class:`~.base.StorageUnavailable`, and the task keeps trying (0.5 s doubling
to 5 s) until it is back.  The password comes from an env var and appears in
no log line, no error and not in ``where``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from itertools import islice
from typing import Any

from fastroute.recording.redis_relay import where as url_where
from fastroute.storage.base import Drops, Pending, StorageError, StorageUnavailable, Store, admit

log = logging.getLogger("fastroute.storage")

MAX_QUEUED = 100_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: puts sent in one pipeline at most
BATCH_MAX = 1000
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0
#: seconds close() waits for the queue to reach Redis
CLOSE_TIMEOUT_S = 5.0


def where(url: str) -> str:
    """``redis://host:port/db`` for a log line: no user, no password, no query."""
    scheme, _, rest = url.partition("://")
    if scheme == "unix":
        query = rest.partition("?")[2]
        db = next((v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "db"), "") or "0"
    else:
        db = rest.partition("/")[2].partition("?")[0] or "0"
    return f"{url_where(url)}/{db}"


class RedisStore(Store):
    def __init__(self, url: str, password: str | None = None, key_prefix: str = "fastroute:", *,
                 max_queued: int = MAX_QUEUED, max_queued_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.url = url
        self.where = where(url)
        self.key_prefix = key_prefix
        self.max_queued = max_queued
        self._password = password
        self._pending = Pending(max_queued_bytes)
        self._drops = Drops(log, self.where)
        #: puts as (key, entry), and flushes as futures, in order; popped once sent
        self._ops: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._sending = asyncio.Lock()  # held while a batch is on its way: a delete waits for it
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._down = False  # cannot be reached: reads fail at once, the task probes
        self._refusing = False  # answers, but refuses writes: the task retries them
        self._closed = False

    @property
    def dropped(self) -> int:
        """Puts dropped because the queue was full."""
        return self._drops.total

    async def start(self) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # one quick retry (a pooled connection Redis closed); longer outages are this module's to handle
        self._client = redis.from_url(self.url, password=self._password, socket_connect_timeout=3,
                                      socket_timeout=5, health_check_interval=15, retry=Retry(NoBackoff(), 1))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fastroute-storage-redis")

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        full = self._closed or len(self._ops) >= self.max_queued
        entry = admit(self._pending, self._drops, key, value, ttl_s, full)
        if entry is not None:
            self._ops.append((key, entry))
            self._wake.set()

    async def get(self, key: str) -> bytes | None:
        entry = self._pending.get(key)
        if entry is not None:
            return entry[0] if entry[1] > time.time() else None
        self._check_up()
        try:
            return await self._client.get(self.key_prefix + key)
        except _errors() as exc:
            raise self._unavailable(exc) from exc

    async def delete(self, key: str) -> bool:
        was_pending = self._pending.drop(key)  # a queued put of it is skipped from now on
        self._check_up()
        try:
            async with self._sending:  # a put of it already on its way lands first
                removed = await self._client.delete(self.key_prefix + key)
        except _errors() as exc:
            raise self._unavailable(exc) from exc
        return was_pending or removed > 0

    async def flush(self) -> None:
        if self._client is None:
            raise StorageError(f"storage: {self.where} is not started")
        if not self._ops:
            return  # a batch on its way is still in _ops: nothing is
        self._check_up()
        done = asyncio.get_running_loop().create_future()
        self._ops.append(done)
        self._wake.set()
        await done

    async def close(self) -> None:
        if self._closed or self._client is None:
            self._closed = True
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.flush(), CLOSE_TIMEOUT_S)
        except (StorageUnavailable, TimeoutError):
            lost = sum(1 for op in self._ops if type(op) is tuple)
            log.warning("storage: closing with %d put(s) not written to %s", lost, self.where)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # closing a broken connection: nothing to save
            await self._client.aclose()
        self._client = None

    # ── being down, and back ────────────────────────────────────────────────

    def _check_up(self) -> None:
        if self._client is None:
            raise StorageError(f"storage: {self.where} is {'closed' if self._closed else 'not started'}")
        if self._down:
            raise StorageUnavailable(f"storage: cannot reach {self.where}")

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        if isinstance(exc, _connection_errors()):
            self._went_down(exc)
            return StorageUnavailable(f"storage: cannot reach {self.where} ({type(exc).__name__})")
        return StorageUnavailable(f"storage: {self.where} answered with an error ({type(exc).__name__})")

    def _went_down(self, exc: BaseException) -> None:
        if self._down:
            return
        self._down = True
        log.warning("storage: cannot reach %s (%s); puts wait in memory (up to %d) until it is back",
                    self.where, type(exc).__name__, self.max_queued)
        self._fail_flushes(f"storage: cannot reach {self.where}")
        self._wake.set()  # the task probes until it is back

    def _refused(self, exc: BaseException) -> None:
        """Redis answers but refuses the writes (out of memory, a read-only replica): reads go on."""
        if not self._refusing:
            log.warning("storage: %s refuses the puts (%s: %s); they wait in memory and are tried again",
                        self.where, type(exc).__name__, exc)
            self._refusing = True
        self._fail_flushes(f"storage: {self.where} refuses the puts ({type(exc).__name__})")

    def _fail_flushes(self, why: str) -> None:
        for op in self._ops:  # the flushes waiting fail now; the puts wait (only the task pops _ops)
            if type(op) is not tuple and not op.done():
                op.set_exception(StorageUnavailable(why))

    # ── the sending task ────────────────────────────────────────────────────

    async def _run(self) -> None:
        pause = RETRY_FIRST_S
        while True:
            if self._down:
                try:
                    await self._client.ping()
                except _errors():
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_S)
                    continue
                self._down = False
                log.warning("storage: %s is back; sending the %d queued put(s)", self.where,
                            sum(1 for op in self._ops if type(op) is tuple))
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(islice(self._ops, BATCH_MAX))
            try:
                settled = await self._send(batch)
            except _errors() as exc:
                if isinstance(exc, _connection_errors()):
                    self._went_down(exc)
                else:
                    self._refused(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            pause = RETRY_FIRST_S
            if self._refusing:
                log.warning("storage: %s takes the puts again", self.where)
                self._refusing = False
            for _ in batch:
                self._ops.popleft()
            for key, entry in settled:
                self._pending.settle(key, entry)
            for op in batch:
                if type(op) is not tuple and not op.done():
                    op.set_result(None)

    async def _send(self, batch: list[Any]) -> list[Any]:
        """One pipeline of the batch's current puts, with what is left of their time; the puts done."""
        async with self._sending:
            pipe = self._client.pipeline(transaction=False)
            now = time.time()
            settled = []
            for op in batch:
                if type(op) is tuple and self._pending.is_current(*op):
                    settled.append(op)
                    ms = int((op[1][1] - now) * 1000)
                    if ms > 0:  # else it expired while it waited
                        pipe.set(self.key_prefix + op[0], op[1][0], px=ms)
            if len(pipe):
                await pipe.execute()
        return settled


def _errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away or refuses us raises."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away raises (a wrong password included: the connection is refused)."""
    from redis.exceptions import ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError, OSError)
