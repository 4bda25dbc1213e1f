"""Events across workers on one machine: every worker's events reach every worker's viewers.

With ``--workers N`` each worker binds a Unix datagram socket in one directory
(``FASTROUTE_EVENTS_DIR``, made by the runner) and sends each event it
publishes to every other socket there.  Datagrams are sent without waiting; a
worker that cannot keep up loses events, never slows a request.  Many machines
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


class EventRelay:
    def __init__(self, bus: EventBus, directory: str | os.PathLike[str]) -> None:
        self.bus = bus
        self.dir = Path(directory)
        self.path = self.dir / f"{os.getpid()}.sock"
        self._sock: socket.socket | None = None
        self._peers: list[str] = []
        self._peers_at = 0.0

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
            self.bus.deliver(data)

    def _peer_paths(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_at > 1.0:  # workers come and go: look again once a second
            own = self.path.name
            self._peers = [str(p) for p in self.dir.glob("*.sock") if p.name != own]
            self._peers_at = now
        return self._peers

    def send(self, data: bytes) -> None:
        if self._sock is None:
            return
        for peer in self._peer_paths():
            try:
                self._sock.sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                pass  # that worker is behind: it loses this event
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    self._peers_at = 0.0  # a worker went away: list them again
                elif exc.errno != errno.EMSGSIZE:
                    log.debug("relay to %s failed: %s", peer, exc)

    async def stop(self) -> None:  # async like RedisRelay.stop: the app stops either the same way
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
