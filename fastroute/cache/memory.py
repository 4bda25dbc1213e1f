"""The exact cache of one worker: an LRU bounded in entries and in bytes, each entry for ``ttl_s``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryStore:
    """Keys and values (bytes) in least-recently-used order.  ``max_bytes`` counts the keys' and values'
    lengths; a value larger than it is never kept.  An expired entry is dropped when it is next looked
    up, or when the bounds push it out (it is then the least recently used, or close to it)."""

    where = "memory"

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        #: bytes of the keys and values held
        self.bytes = 0
        #: entries pushed out by a bound (not expired ones)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    async def start(self) -> None:
        """Nothing to open (the Redis store's counterpart)."""

    async def close(self) -> None:
        self._items.clear()
        self.bytes = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> bool:
        """Keep ``value`` (replacing what ``key`` held); False when it is larger than ``max_bytes``."""
        size = len(key) + len(value)
        if size > self.max_bytes:
            return False
        if key in self._items:
            self._drop(key)
        self._items[key] = (self._clock() + self.ttl_s, value)
        self.bytes += size
        items = self._items
        while len(items) > self.max_entries or self.bytes > self.max_bytes:
            old, (_, dropped) = items.popitem(last=False)
            self.bytes -= len(old) + len(dropped)
            self.evicted += 1
        return True

    def _drop(self, key: str) -> None:
        _, value = self._items.pop(key)
        self.bytes -= len(key) + len(value)
