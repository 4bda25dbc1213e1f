"""The request log: one JSON line per finished request (``[logging] enabled, path``).

Entries are queued (a deque: one append on the request path) and a writer
thread takes what gathered every ``interval_s``, encodes it and writes it in one
``write``, so a slow disk never holds a request up and the thread wakes once per
interval, not once per request (waking it per entry cost the loop a GIL hand-off
each time); ``close()`` (on shutdown) writes out what is queued, so a request that
was answered is in the log after a clean stop.  Entries are built
from the exchange, which never holds a key.

The queue is bounded: at most ``max_pending`` entries, and fewer when entries are large --
as many as make ``max_pending_bytes`` at the size the writer measured lately.  When the disk
stalls that long, new entries are dropped (said in the log when it starts, and how many when
it ends), and requests go on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("fastroute.log")

#: seconds between the writer's turns: how late a line may reach the file
INTERVAL_S = 0.02
#: entries waiting for the disk, at most
MAX_PENDING = 10_000
#: bytes of entries waiting for the disk, at most (at the size of the entries written lately)
MAX_PENDING_BYTES = 64 * 1024 * 1024
#: the bound never goes below this many entries, however large they are
MIN_PENDING = 64


def pending_bound(max_pending: int, max_pending_bytes: int, entry_bytes: float) -> int:
    """How many entries may wait, when an entry takes ``entry_bytes`` once encoded."""
    return max(MIN_PENDING, min(max_pending, int(max_pending_bytes // max(entry_bytes, 1.0))))


class RequestLog:
    def __init__(self, path: str | os.PathLike[str], max_pending: int = MAX_PENDING,
                 max_pending_bytes: int = MAX_PENDING_BYTES, interval_s: float = INTERVAL_S) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        #: entries that may wait now: the writer lowers it when entries are large
        self.bound = max_pending
        #: entries dropped since the log was opened, and since the queue last had room
        self.dropped = 0
        self._dropping = 0
        self._entry_bytes = 0.0
        self.interval_s = interval_s
        self._pending: deque[Any] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastroute-request-log", daemon=True)
        self._thread.start()

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one entry; returns at once.  Dropped when the queue is full (the disk is stalled)."""
        if len(self._pending) >= self.bound:
            self.dropped += 1
            self._dropping += 1
            if self._dropping == 1:
                log.warning("request log: %d entries wait for %s; dropping new ones until it catches up",
                            len(self._pending), self.path)
            return
        if self._dropping:
            log.warning("request log: %d entries dropped while %s was behind", self._dropping, self.path)
            self._dropping = 0
        self._pending.append(entry)

    def _run(self) -> None:
        # O_APPEND: lines from several workers never interleave mid-line
        with open(self.path, "ab", buffering=0) as f:
            while not self._stop.wait(self.interval_s):
                self._write_out(f)
            self._write_out(f)

    def _write_out(self, f: Any) -> None:
        """Encode and write what is queued; then say how many entries may wait from now on."""
        pending = self._pending
        batch = []
        for _ in range(len(pending)):
            item = pending.popleft()
            try:
                line = orjson.dumps(item, default=str) + b"\n"
            except TypeError:
                log.exception("could not encode a log entry")
                continue
            batch.append(line)
            # the size of an encoded entry lately (a moving average)
            self._entry_bytes = len(line) if not self._entry_bytes else 0.9 * self._entry_bytes + 0.1 * len(line)
        if batch:
            # set by this thread only, read by the loop's: what the queue may hold from now on
            self.bound = pending_bound(self.max_pending, self.max_pending_bytes, self._entry_bytes)
            f.write(b"".join(batch))

    def close(self, timeout: float = 10.0) -> None:
        """Write out everything queued, then stop."""
        self._stop.set()
        self._thread.join(timeout)
