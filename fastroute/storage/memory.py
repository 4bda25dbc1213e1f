"""The throwaway store: one dict per worker, for tests and runs whose state may be lost.

Workers do not share it (``--workers 2``: each has its own), and it is gone
when the process ends.  Bounded by ``max_bytes`` — the bytes of the keys and
values held — by evicting the least recently used (read or written) first.
An expired entry is never returned; it is dropped when read or deleted, when
it comes to the least recently used end (each put drops up to two expired
entries there), or when evicted.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from fastroute.storage.base import Store

log = logging.getLogger("fastroute.storage")


class MemoryStore(Store):
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.where = f"memory (this worker's own, up to {max_bytes:,} bytes)"
        #: key -> (value, expires_at: time.monotonic() seconds); least recently used first
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0
        self._said_too_big = False

    def __len__(self) -> int:
        return len(self._items)

    async def start(self) -> None:
        """Nothing to open."""

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        if type(value) is not bytes:
            value = bytes(value)
        items = self._items
        old = items.pop(key, None)
        if old is not None:
            self.bytes -= len(key) + len(old[0])
        size = len(key) + len(value)
        if size > self.max_bytes:
            if not self._said_too_big:
                log.warning("storage: a value of %d bytes is larger than the memory store's bound (%d); "
                            "not kept", len(value), self.max_bytes)
                self._said_too_big = True
            return
        now = time.monotonic()
        items[key] = (value, now + ttl_s)
        self.bytes += size
        for _ in range(2):  # a couple of expired entries at the old end go with each put
            oldest = next(iter(items))
            if items[oldest][1] > now:
                break
            self._remove(oldest)
        while self.bytes > self.max_bytes:
            self._remove(next(iter(items)))

    async def delete(self, key: str) -> bool:
        item = self._items.get(key)
        if item is None:
            return False
        self._remove(key)
        return item[1] > time.monotonic()

    async def flush(self) -> None:
        """Nothing to wait for: a put is in the dict when it returns (and no other worker sees it)."""

    async def close(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _remove(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.bytes -= len(key) + len(value)
