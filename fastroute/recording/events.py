"""The event bus: ``start``, ``classified``, ``routed`` and ``complete`` events, fanned out
to every viewer (dashboard, TUI, ``watch``).

Publishing never waits: each subscriber has a bounded queue, and a subscriber
that falls behind is dropped rather than allowed to hold memory without bound.
A new subscriber first gets the recent history, so a new viewer does not
start from an empty page.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("fastroute.events")


_END = b""


class Subscription:
    __slots__ = ("queue", "dropped", "_bus")

    def __init__(self, bus: EventBus, size: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size + 1)  # +1: room for the end marker
        self.dropped = False
        self._bus = bus

    async def get(self) -> bytes:
        """The next event; ``b""`` when the feed is over (the server is stopping)."""
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, history: int = 500, queue_size: int = 1000) -> None:
        self.history: deque[bytes] = deque(maxlen=history)
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        #: other places that want every event (a relay to other workers): called with the JSON bytes
        self.forwarders: list[Callable[[bytes], None]] = []

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event to every subscriber, and to the forwarders; never waits."""
        data = orjson.dumps(event)
        self.deliver(data)
        for forward in self.forwarders:
            try:
                forward(data)
            except Exception:
                log.exception("event forwarder failed")

    def deliver(self, data: bytes) -> None:
        """Hand already-encoded event bytes to local subscribers (events from other workers come in here)."""
        self.history.append(data)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(data)
            except asyncio.QueueFull:
                sub.dropped = True  # too slow: let it go rather than buffer for it
                self._subscribers.discard(sub)
                log.warning("dropped a slow event subscriber (%d events behind)", sub.queue.qsize())

    def subscribe(self) -> tuple[Subscription, list[bytes]]:
        """A new subscription and the recent history it should show first."""
        sub = Subscription(self, self.queue_size)
        self._subscribers.add(sub)
        return sub, list(self.history)

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close_all(self) -> None:
        """End every feed (the server is stopping): each subscriber gets the end marker."""
        for sub in list(self._subscribers):
            sub.dropped = True
            self._subscribers.discard(sub)
            try:
                sub.queue.put_nowait(_END)
            except asyncio.QueueFull:
                pass  # its consumer will see ``dropped`` at its next keep-alive

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
