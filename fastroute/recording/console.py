"""One line on stdout per failed request, or per request with ``--access-log``.

The request path only appends a tuple to a deque (``note``); a thread of its own
formats the lines and writes them out every ``interval_s`` (0.1 s), in writes of
whole lines of at most ``PIPE_BUF`` bytes, so the lines of several workers
sharing one stdout never mix mid-line.  Nothing secret reaches a line: the
exchange holds no key, and each line is scrubbed besides of the values of the
key variables the config names and of anything shaped like a key
(``sk-…``, ``Bearer …``), which an upstream's error message might repeat.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, TextIO

#: how often queued lines are written out
INTERVAL_S = 0.1
#: lines waiting beyond this many (stdout stalled) are dropped, oldest first: a request never waits
MAX_PENDING = 10_000
#: a reason is cut to this many characters, a model name (or a path) to NAME_LIMIT
REASON_LIMIT = 300
NAME_LIMIT = 120
#: what a queued record keeps of a reason or a path: enough for the line, whatever the spaces
_KEPT = 4 * REASON_LIMIT
#: one write of at most this many bytes reaches a pipe in one piece
PIPE_BUF = 4096

_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}|\b(?:[Bb]earer|BEARER)[ \t]+(?!\[redacted\])[^\s,;\"'()]+")
_SPACES = re.compile(r"\s+")

# (ts_ms, status, dialect, model, provider, sent_model, duration_ms, id, error)
Record = tuple[int, int, str, str, "str | None", "str | None", "float | None", str, "str | None"]


def render(record: Record, clock: str | None = None) -> str:
    """One line: time, status, dialect, model -> provider (as the model sent), duration, id, why it failed."""
    ts_ms, status, dialect, model, provider, sent, duration, rid, error = record
    if clock is None:
        clock = time.strftime("%H:%M:%S", time.localtime(ts_ms // 1000))
    line = f"{clock} {status} {dialect:<9} {_clip(model) or '-'}"
    if provider:
        line += f" -> {provider}" + (f" as {_clip(sent)}" if sent and sent != model else "")
    if duration is not None:
        line += f"  {duration:.1f} ms"
    if rid:
        line += f"  {rid}"
    if error is not None:
        reason = _SPACES.sub(" ", error).strip()
        if len(reason) > REASON_LIMIT:
            reason = reason[:REASON_LIMIT] + "…"
        line += f"  error: {reason}"
    return line


def _clip(name: str | None) -> str | None:
    """A name as the client sent it, cut short: a client picks it, so it may be any length."""
    return name if name is None or len(name) <= NAME_LIMIT else name[:NAME_LIMIT] + "…"


def scrub(line: str, secrets: Iterable[str]) -> str:
    """``line`` without the given secret values and without anything shaped like a key."""
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, "[redacted]")
    if "sk-" in line or "earer" in line or "EARER" in line:  # the regex only when it may match
        line = _KEYLIKE.sub("[redacted]", line)
    return line


class ConsoleLog:
    """Lines for stdout, written off the request path.  ``access``: every request, not only failures."""

    def __init__(self, access: bool = False, secret_envs: Iterable[str] = (), out: TextIO | None = None,
                 interval_s: float = INTERVAL_S) -> None:
        self.access = access
        self.secret_envs = tuple(n for n in secret_envs if n)
        self.out = out if out is not None else sys.stdout
        self.interval_s = interval_s
        self._pending: deque[Record] = deque(maxlen=MAX_PENDING)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ConsoleLog:
        self._thread = threading.Thread(target=self._run, name="fastroute-console", daemon=True)
        self._thread.start()
        return self

    # the request path ------------------------------------------------------

    def note(self, entry: dict[str, Any]) -> None:
        """Queue the line of a finished exchange (a log entry), if it is one to print."""
        error, status = entry["error"], entry["status"]
        if error is not None or status >= 400 or self.access:
            if error is not None and len(error) > _KEPT:
                error = error[:_KEPT]  # all a line shows: a queued record holds no more than that
            self._pending.append((entry["ts_ms"], status, entry["dialect"], entry["requested_model"],
                                  entry["provider"], entry["sent_model"], entry["duration_ms"], entry["id"], error))

    def note_miss(self, status: int, dialect: str, method: str, path: str, reason: str) -> None:
        """Queue the line of a request no route took (it has no exchange, so no id)."""
        self._pending.append((int(time.time() * 1000), status, dialect, f"{method} {path[:_KEPT]}", None, None,
                              None, "", reason[:_KEPT]))

    # the writer ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write out what is queued (the writer thread calls this; so does ``close``)."""
        if not self._pending:
            return
        secrets = [v for n in self.secret_envs if len(v := os.environ.get(n) or "") >= 6]
        chunk: list[str] = []
        size = 0
        pending = self._pending
        second, clock = -1, ""
        while pending:
            record = pending.popleft()
            if record[0] // 1000 != second:  # one clock string per second, not per line
                second = record[0] // 1000
                clock = time.strftime("%H:%M:%S", time.localtime(second))
            line = scrub(render(record, clock), secrets) + "\n"
            n = len(line.encode("utf-8", "replace"))
            if chunk and size + n > PIPE_BUF:
                self._write("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            self._write("".join(chunk))

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # stdout closed or gone: lines are a courtesy, never a failure
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Write out everything queued, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)  # its last act is a flush
        else:
            self.flush()
