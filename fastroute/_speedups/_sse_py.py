"""Server-sent events, split incrementally: the pure-Python twin of ``_sse_c.pyx``.

Follows the WHATWG parsing rules: lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (split
anywhere, a ``\\r`` at the end of one chunk and ``\\n`` at the start of the next
being one ending); a blank line dispatches; ``:`` starts a comment; ``data``
lines join with ``\\n``; ``event`` names the event (``message`` by default);
``id`` persists to later events unless it contains NUL; ``retry`` takes ASCII
digits only.  ``data`` stays bytes, for orjson.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


class SSEEvent:
    __slots__ = ("event", "data", "id", "retry")

    def __init__(self, event: str, data: bytes, id: str | None = None, retry: int | None = None) -> None:
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.event, self.data, self.id, self.retry) == (other.event, other.data, other.id, other.retry)

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}, retry={self.retry!r})"


class SSEDecoder:
    """``feed(bytes) -> list[SSEEvent]``; ``flush()`` at the end of the stream."""

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_retry", "_started", "_skip_lf")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None
        self._started = False
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not chunk:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
                if not chunk:
                    return events
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return events
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" not in buf:
            lines = buf.split(b"\n")
            self._buf = lines.pop()
            for line in lines:
                self._line(line, events)
            return events
        pos = 0
        n = len(buf)
        i_n = -2  # the next "\n" at or after pos; -1: there is none
        while pos < n:
            if i_n != -1 and i_n < pos:
                i_n = buf.find(b"\n", pos)
            i_r = buf.find(b"\r", pos, i_n if i_n >= 0 else n)
            if i_r >= 0:
                end = i_r
                if i_r + 1 < n:
                    nxt = i_r + 2 if buf[i_r + 1] == 10 else i_r + 1
                else:
                    nxt = i_r + 1
                    self._skip_lf = True
            elif i_n >= 0:
                end, nxt = i_n, i_n + 1
            else:
                break
            self._line(buf[pos:end], events)
            pos = nxt
        self._buf = buf[pos:]
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                events.append(SSEEvent(self._event or "message", data, self._last_id, self._retry))
                self._data = []
            self._event = None
            self._retry = None
            return
        if line[0] == 58:  # ":" comment
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field = line[:colon]
            value = line[colon + 2:] if line[colon + 1:colon + 2] == b" " else line[colon + 1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif field == b"retry":
            if value.isdigit():
                self._retry = int(value)

    def flush(self) -> list[SSEEvent]:
        """End of stream: the unterminated last line counts, and a pending event is dispatched."""
        events: list[SSEEvent] = []
        if self._buf and not (not self._started and _BOM.startswith(self._buf)):
            self._line(self._buf, events)
        self._line(b"", events)
        self._reset()
        return events
