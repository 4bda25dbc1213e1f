"""Events across workers on one machine: every worker's events reach every worker's viewers.

With ``--workers N`` each worker binds a Unix datagram socket in one directory
(``FASTROUTE_EVENTS_DIR``, made by the runner) and sends the events it
publishes to every other socket there: gathered for ``FLUSH_S`` and sent as one
datagram of newline-separated JSON (an encoded event holds no raw newline), so a
request costs no send and no wake-up of every other worker per event (measured
with 2 workers: four of each per request took ~200 us of CPU).  Datagrams are
sent without waiting; a worker that cannot keep up loses events, never slows a request.  Many machines
need a shared broker instead (see the README).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from pathlib import Path

from fastroute.recording.events import EventBus

log = logging.getLogger("fastroute.relay")
ENV_DIR = "FASTROUTE_EVENTS_DIR"
#: seconds events gather before they go out together
FLUSH_S = 0.01
#: bytes of events in one datagram at most (a Unix datagram socket's limit is near 200 KB)
DATAGRAM_BYTES = 160 * 1024


class EventRelay:
    def __init__(self, bus: EventBus, directory: str | os.PathLike[str]) -> None:
        self.bus = bus
        self.dir = Path(directory)
        self.path = self.dir / f"{os.getpid()}.sock"
        self._sock: socket.socket | None = None
        self._peers: list[str] = []
        self._peers_at = 0.0
        #: events waiting for the next flush, and their size
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush: asyncio.TimerHandle | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if self.path.exists():
            self.path.unlink()
        sock.bind(str(self.path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)
        self.bus.forwarders.append(self.send)

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            for event in data.split(b"\n"):
                if event:
                    self.bus.deliver(event)

    def _peer_paths(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_at > 1.0:  # workers come and go: look again once a second
            own = self.path.name
            self._peers = [str(p) for p in self.dir.glob("*.sock") if p.name != own]
            self._peers_at = now
        return self._peers

    def send(self, data: bytes) -> None:
        """Queue one event for the other workers (the bus's forwarder)."""
        if self._sock is None:
            return
        if self._pending_bytes + len(data) > DATAGRAM_BYTES:
            self.flush()
        self._pending.append(data)
        self._pending_bytes += len(data) + 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Send what gathered, one datagram to each other worker."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._pending or self._sock is None:
            return
        data = b"\n".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        for peer in self._peer_paths():
            try:
                self._sock.sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                pass  # that worker is behind: it loses these events
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    self._peers_at = 0.0  # a worker went away: list them again
                elif exc.errno != errno.EMSGSIZE:
                    log.debug("relay to %s failed: %s", peer, exc)

    async def stop(self) -> None:  # async like RedisRelay.stop: the app stops either the same way
        self.flush()
        if self._sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            except RuntimeError:
                pass
            self._sock.close()
            self._sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
