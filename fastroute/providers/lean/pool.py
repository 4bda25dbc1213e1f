"""Keep-alive connections to one origin (scheme, host, port).

Idle connections wait last-in first-out (the warmest is reused, the coldest ages out) and are
bounded in number; one the upstream closes while it waits is forgotten the moment the loop
sees it go (``connection_lost``).  Busy connections are known too, so closing the client
closes them.  There is no bound on busy connections: each request that finds no idle one
opens its own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from fastroute.errors import UpstreamTimeout, UpstreamUnreachable
from fastroute.providers.lean.connection import Connection


class Pool:
    __slots__ = ("loop", "host", "port", "ssl", "server_hostname", "idle", "busy", "max_idle", "keepalive",
                 "high_water", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 max_idle: int, keepalive: float, high_water: int) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.server_hostname = host if ssl_context is not None else None
        self.idle: deque[Connection] = deque()
        self.busy: set[Connection] = set()
        self.max_idle = max_idle
        #: seconds an idle connection is kept
        self.keepalive = keepalive
        self.high_water = high_water
        self.closed = False

    def take(self) -> Connection | None:
        """The most recently used idle connection, or None."""
        idle = self.idle
        if not idle:
            return None
        conn = idle.pop()
        if conn.idle_since < self.loop.time() - self.keepalive:  # the warmest is too old: so are the rest
            conn.idle = False
            conn.transport.close()
            while idle:
                old = idle.pop()
                old.idle = False
                old.transport.close()
            return None
        conn.idle = False
        conn.reused = True
        self.busy.add(conn)
        return conn

    async def connect(self, timeout: float) -> Connection:
        conn = Connection(self, self.high_water)
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl,
                                                  server_hostname=self.server_hostname)
        except TimeoutError as exc:  # first: in 3.11 a TimeoutError is an OSError too
            raise UpstreamTimeout("connect timeout", phase="connect") from exc
        except OSError as exc:  # refused, unreachable, no such name, a certificate refused
            raise UpstreamUnreachable(f"cannot connect: {exc.strerror or exc}") from exc
        if self.closed:
            conn.transport.close()
            raise UpstreamUnreachable("cannot connect: the client is closed")
        self.busy.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """A connection whose answer ended cleanly: kept for the next request, or closed."""
        self.busy.discard(conn)
        idle = self.idle
        if self.closed or len(idle) >= self.max_idle:
            conn.transport.close()
            return
        now = self.loop.time()
        if idle and idle[0].idle_since < now - self.keepalive:  # age the coldest out, one per release
            old = idle.popleft()
            old.idle = False
            old.transport.close()
        conn.idle = True
        conn.idle_since = now
        idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """``conn`` was closed (by either side)."""
        if conn.idle:
            conn.idle = False
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        else:
            self.busy.discard(conn)

    def close(self) -> None:
        self.closed = True
        while self.idle:
            conn = self.idle.pop()
            conn.idle = False
            conn.transport.close()
        for conn in list(self.busy):
            conn.abort()
        self.busy.clear()
