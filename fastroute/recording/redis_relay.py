"""Events across machines: every instance's events reach every instance's viewers, through Redis.

With ``[events] redis_url`` each worker of each instance publishes the events it
makes on one pub/sub channel and delivers what the others publish to its own
viewers (each message starts with the sender's tag, so nobody shows its own
events twice).  Publishing never waits on Redis: events go through a bounded
queue to a publisher task, and when Redis is slow or gone they are dropped —
requests never notice.  A lost connection is retried in the background (0.5 s
doubling to 5 s) and said once in the log; until it is back each worker's feed
shows its own events.  The password, if any, comes from an env var and never
appears in a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from fastroute.recording.events import EventBus

log = logging.getLogger("fastroute.events.redis")

#: events waiting for the publisher; beyond this, new ones are dropped
QUEUE_SIZE = 10_000
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


def where(url: str) -> str:
    """The URL for a log line: scheme, host and port only."""
    scheme, _, rest = url.partition("://")
    host = rest.partition("/")[0].rpartition("@")[2]
    return f"{scheme}://{host}" if scheme != "unix" else f"unix://{rest.partition('?')[0]}"


class RedisRelay:
    def __init__(self, bus: EventBus, url: str, channel: str, password: str | None = None) -> None:
        self.bus = bus
        self.url = url
        self.channel = channel
        self._password = password
        self.tag = os.urandom(8).hex().encode() + b"|"  # this worker's mark on what it publishes
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False

    def start(self) -> None:
        """Start the background tasks on the running loop; returns at once (Redis may be down)."""
        self.bus.forwarders.append(self.send)
        self._tasks.append(asyncio.get_running_loop().create_task(self._run(), name="fastroute-redis-events"))

    def send(self, data: bytes) -> None:
        """A forwarder of the bus: queue the event for Redis, or drop it; never waits."""
        if not self.connected:
            return  # Redis is away: this event stays on this worker's feed
        try:
            self._queue.put_nowait(self.tag + data)
        except asyncio.QueueFull:
            pass  # Redis is behind: the other instances lose this event, the request does not wait

    async def _run(self) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        pause = RETRY_FIRST_S
        said_down = False
        while True:
            client = redis.from_url(self.url, password=self._password, socket_connect_timeout=3,
                                    health_check_interval=15)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self.connected, pause, said_down = True, RETRY_FIRST_S, False
                log.info("events: sharing the live feed through %s, channel %r", where(self.url), self.channel)
                tasks = (asyncio.create_task(self._receive(pubsub)), asyncio.create_task(self._publish(client)))
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # the error that ended it
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            except (RedisError, OSError) as exc:
                if not said_down:
                    log.warning("events: cannot reach %s (%s); each worker shows its own events until it is back",
                                where(self.url), type(exc).__name__)
                    said_down = True
            finally:
                self.connected = False
                await _close(client)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)

    async def _receive(self, pubsub: Any) -> None:
        tag_len = len(self.tag)
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            data = message.get("data")
            if isinstance(data, bytes) and data[tag_len - 1:tag_len] == b"|" and not data.startswith(self.tag):
                self.bus.deliver(data[tag_len:])
        raise ConnectionError("the subscription ended")

    async def _publish(self, client: Any) -> None:
        while True:
            data = await self._queue.get()
            await client.publish(self.channel, data)

    async def stop(self) -> None:
        if self.send in self.bus.forwarders:
            self.bus.forwarders.remove(self.send)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # closing a broken connection: nothing to save
        pass
