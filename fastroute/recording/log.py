"""The request log: one JSON line per finished request (``[logging] enabled, path``).

Lines are handed to a writer thread through a queue, so a slow disk never
holds a request up; ``close()`` (on shutdown) writes out what is queued, so a
request that was answered is in the log after a clean stop.  Entries are built
from the exchange, which never holds a key.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("fastroute.log")

_STOP = object()


class RequestLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fastroute-request-log", daemon=True)
        self._thread.start()

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one entry; returns at once."""
        self._queue.put(entry)

    def _run(self) -> None:
        # O_APPEND: lines from several workers never interleave mid-line
        with open(self.path, "ab", buffering=0) as f:
            while True:
                item = self._queue.get()
                batch = []
                while True:
                    if item is _STOP:
                        if batch:
                            f.write(b"".join(batch))
                        return
                    try:
                        batch.append(orjson.dumps(item, default=str) + b"\n")
                    except TypeError:
                        log.exception("could not encode a log entry")
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                f.write(b"".join(batch))

    def close(self, timeout: float = 10.0) -> None:
        """Write out everything queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
