"""The event bus: ``start``, ``classified``, ``routed`` and ``complete`` events, fanned out
to every viewer (dashboard, TUI, ``watch``).

Publishing never waits: each subscriber has a bounded queue (``queue_size`` events and
``queue_bytes`` bytes), and a subscriber that falls behind is dropped rather than allowed
to hold memory without bound.  At most ``max_subscribers`` viewers are served at once: one
more gets the history and its feed ends there (said in the log), as a dropped one's does.
A new subscriber first gets the recent history (``history`` events), so a new viewer does
not start from an empty page.
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


#: viewers one worker feeds at once
MAX_SUBSCRIBERS = 64
#: bytes of events one viewer may have waiting before it is dropped
QUEUE_BYTES = 2 * 1024 * 1024


class Subscription:
    __slots__ = ("queue", "dropped", "bytes", "_bus")

    def __init__(self, bus: EventBus, size: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size + 1)  # +1: room for the end marker
        self.dropped = False
        #: bytes of the events waiting in the queue
        self.bytes = 0
        self._bus = bus

    async def get(self) -> bytes:
        """The next event; ``b""`` when the feed is over (the server is stopping, or it was dropped)."""
        data = await self.queue.get()
        self.bytes -= len(data)
        return data

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, history: int = 500, queue_size: int = 1000, queue_bytes: int = QUEUE_BYTES,
                 max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        #: the recent events, encoded or (published while nobody watched) not yet
        self.history: deque[bytes | dict[str, Any]] = deque(maxlen=history)
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_subscribers = max_subscribers
        self._subscribers: set[Subscription] = set()
        self._said_full = False
        #: other places that want every event (a relay to other workers): called with the JSON bytes
        self.forwarders: list[Callable[[bytes], None]] = []

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event to every subscriber, and to the forwarders; never waits.  Encoded only
        when someone takes it now: with nobody watching it waits in the history as it is, and is
        encoded if a viewer comes for it (most requests are seen by no viewer)."""
        if not self._subscribers and not self.forwarders:
            self.history.append(event)
            return
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
        if not self._subscribers:
            return
        size = len(data)
        for sub in list(self._subscribers):
            if sub.bytes + size > self.queue_bytes:
                self._drop(sub)
                continue
            try:
                sub.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(sub)
                continue
            sub.bytes += size

    def recent(self) -> list[bytes]:
        """The history, encoded (what was not yet is, once, here)."""
        history = self.history
        for i, event in enumerate(history):
            if not isinstance(event, bytes):
                history[i] = orjson.dumps(event, default=str)
        return list(history)

    def _drop(self, sub: Subscription) -> None:
        """Too slow: let it go rather than buffer for it (its feed ends at its next keep-alive)."""
        sub.dropped = True
        self._subscribers.discard(sub)
        log.warning("dropped a slow event subscriber (%d events, %d bytes behind)", sub.queue.qsize(), sub.bytes)

    def subscribe(self) -> tuple[Subscription, list[bytes]]:
        """A new subscription and the recent history it should show first.  With ``max_subscribers``
        already served, the subscription is over from the start: it gets the history and the end."""
        sub = Subscription(self, self.queue_size)
        if len(self._subscribers) >= self.max_subscribers:
            if not self._said_full:
                log.warning("%d event viewers already: a new one gets the recent history only", self.max_subscribers)
                self._said_full = True
            sub.dropped = True
            sub.queue.put_nowait(_END)
        else:
            self._said_full = False
            self._subscribers.add(sub)
        return sub, self.recent()

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
