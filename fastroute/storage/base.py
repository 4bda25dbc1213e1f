"""The storage seam: one interface (:class:`Store`) that every kind implements, and its errors.

A store holds bytes under string keys, each with a time to live.  Reads are
awaited; a put is only queued (it never waits and never raises on the caller)
and becomes visible to the other workers and instances once written — at the
latest after :meth:`Store.flush`.  A worker reads its own puts at once, written
or not.

    FastrouteError
    └── StorageError                 start(): the store cannot be opened (names the file or URL);
        │                            or it is used before start() or after close()
        └── StorageUnavailable       get / delete / flush: the backend cannot be reached now
                                     (also a RequestError: 503 storage_unavailable to a client)
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from types import TracebackType
from typing import ClassVar, Self

from fastroute.errors import FastrouteError, RequestError


class StorageError(FastrouteError):
    """The store cannot be used: the message names where (a path or a redis URL without password)."""


class StorageUnavailable(RequestError, StorageError):
    """The backend did not answer (Redis down, the SQLite file locked or broken); try again later."""

    status: ClassVar[int] = 503
    error_type: ClassVar[str] = "storage_unavailable"


class Backed:
    """What every store, log and counter kind shares: ``async with`` starts and closes it, and its
    repr says where it is (``where``: a path, ``memory``, or a Redis URL without its password)."""

    where: str

    async def start(self) -> None:
        """Open files, connections and threads, on the running loop."""

    async def close(self) -> None:
        """Release everything."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where}>"


class Store(Backed, abc.ABC):
    """Bytes under string keys, with a time to live.  Built by :func:`fastroute.storage.open_store`;
    nothing is opened until :meth:`start`, on the worker's event loop."""

    #: for the banner and log lines: a path, or ``redis://host:port/db`` — never a password
    where: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Open files, connections and threads, on the running loop."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value; None when the key is unknown or expired.  StorageUnavailable when the
        backend cannot answer (a key this worker put and that is still queued is answered anyway)."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Queue ``value`` under ``key`` for ``ttl_s`` seconds; never waits, never raises on the caller.

        A full queue (the backend away for long) drops the put, counted and logged.  ``value`` is
        bytes (a bytearray or memoryview is copied; anything else is a TypeError, a bug of the caller).
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the key (a queued put of it included); True when it was there and not expired."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return when every put queued so far is visible to every worker and instance."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush, then release everything."""


#: a queued put: the value and its deadline (``time.time()`` seconds); compared by identity
Entry = tuple[bytes, float]


class Pending:
    """Puts queued but not written yet, so that this worker's reads see them at once.

    The writer (a thread or a task) writes an entry only while it is still the
    key's current one — an overwritten or deleted entry is skipped — and settles
    it once written.  Bounded in bytes: :meth:`add` says no when full.  Safe
    between the event loop and one writer thread.
    """

    __slots__ = ("_entries", "_lock", "bytes", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, value: bytes, expires_at: float) -> Entry | None:
        """The new entry, now the key's current one; None when it would pass the bound."""
        entry = (value, expires_at)
        with self._lock:
            old = self._entries.get(key)
            size = self.bytes + len(value) - (len(old[0]) if old is not None else 0)
            if size > self.max_bytes:
                return None
            self._entries[key] = entry
            self.bytes = size
        return entry

    def get(self, key: str) -> Entry | None:
        """The key's pending entry (perhaps expired: then it hides any older written value)."""
        return self._entries.get(key)

    def is_current(self, key: str, entry: Entry) -> bool:
        return self._entries.get(key) is entry

    def settle(self, key: str, entry: Entry) -> None:
        """``entry`` is written: forget it, unless a newer put replaced it meanwhile."""
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]
                self.bytes -= len(entry[0])

    def drop(self, key: str) -> bool:
        """Forget the key's pending put (it is being deleted); True when there was a live one."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self.bytes -= len(entry[0])
        return entry[1] > time.time()


class Drops:
    """Puts refused because the queue was full: one warning when it starts, the count when it ends."""

    __slots__ = ("log", "where", "total", "running")

    def __init__(self, log: logging.Logger, where: str) -> None:
        self.log = log
        self.where = where
        #: puts dropped since the store was built
        self.total = 0
        #: puts dropped since the queue last had room
        self.running = 0

    def drop(self) -> None:
        self.total += 1
        self.running += 1
        if self.running == 1:
            self.log.warning("storage: the queue of puts for %s is full; dropping puts until it drains",
                             self.where)

    def resume(self) -> None:
        """A put was queued again: say how many were lost."""
        self.log.warning("storage: %d put(s) for %s dropped while the queue was full", self.running, self.where)
        self.running = 0


def admit(pending: Pending, drops: Drops, key: str, value: bytes, ttl_s: float, full: bool) -> Entry | None:
    """A put's entry for a writer's queue (now pending, so reads see it), or None when it is
    dropped: the queue is ``full`` or the pending bytes would pass their bound (counted, said)."""
    if type(value) is not bytes:
        value = bytes(value)  # a bytearray or memoryview; a str is the caller's bug (TypeError)
    entry = None if full else pending.add(key, value, time.time() + ttl_s)
    if entry is None:
        drops.drop()
        return None
    if drops.running:
        drops.resume()
    return entry
