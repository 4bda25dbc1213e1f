"""Server-sent events, split incrementally: the pure-Python twin of ``_sse_c.pyx``.

Follows the WHATWG parsing rules: lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (split
anywhere, a ``\\r`` at the end of one chunk and ``\\n`` at the start of the next
being one ending); a blank line dispatches; ``:`` starts a comment; ``data``
lines join with ``\\n``; ``event`` names the event (``message`` by default);
``id`` persists to later events unless it contains NUL; ``retry`` takes ASCII
digits only.  ``data`` stays bytes, for orjson.

Bounded: a line longer than ``max_line_bytes`` (its ending not counted), or an event whose
data is, raises :class:`~fastroute.limits.StreamLineTooLong` from the ``feed`` or ``flush``
that shows it -- as soon as the unfinished line is over the limit, not when it ends -- and
the stream is over.  A long line that comes in many chunks is kept in pieces until it ends, so
it costs its length, not its length times the chunks it came in.

:class:`NDJSONSplitter` splits newline-delimited JSON (Ollama) the same way, with the same bound.
"""

from __future__ import annotations

from fastroute.limits import MAX_STREAM_LINE_BYTES, stream_line_error

_BOM = b"\xef\xbb\xbf"
#: an unfinished line this long is kept in pieces (shorter ones are joined to the next chunk at once)
_PIECES = 16384


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

    __slots__ = ("_buf", "_more", "_more_len", "_data", "_size", "_event", "_last_id", "_retry", "_started",
                 "_skip_lf", "max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_STREAM_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._reset()

    def _reset(self) -> None:
        self._buf = b""  # the start of an unfinished line
        self._more: list[bytes] = []  # its later pieces, when it is longer than one chunk
        self._more_len = 0
        self._data: list[bytes] = []
        self._size = 0  # bytes of the pending event's data lines, one more for each line
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
        limit = self.max_line_bytes
        if self._buf:
            if len(self._buf) >= _PIECES and b"\n" not in chunk and b"\r" not in chunk:  # a long line goes on
                self._more.append(chunk)
                self._more_len += len(chunk)
                if len(self._buf) + self._more_len > limit:
                    raise stream_line_error(limit)
                return events
            if self._more:
                buf = b"".join((self._buf, *self._more, chunk))
                self._more, self._more_len = [], 0
            else:
                buf = self._buf + chunk
        else:
            buf = chunk
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
            if len(buf) > limit:  # only then can one line be over it
                for line in lines:
                    if len(line) > limit:
                        raise stream_line_error(limit)
                    self._line(line, events)
                if len(self._buf) > limit:
                    raise stream_line_error(limit)
            else:
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
            if end - pos > limit:
                raise stream_line_error(limit)
            self._line(buf[pos:end], events)
            pos = nxt
        self._buf = buf[pos:]
        if len(self._buf) > limit:
            raise stream_line_error(limit)
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
            if self._data:
                self._size += len(value) + 1
                if self._size > self.max_line_bytes:
                    raise stream_line_error(self.max_line_bytes, "an event")
            else:
                self._size = len(value)
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
        buf = b"".join((self._buf, *self._more)) if self._more else self._buf
        if buf and not (not self._started and _BOM.startswith(buf)):
            self._line(buf, events)
        self._line(b"", events)
        self._reset()
        return events


class NDJSONSplitter:
    """Newline-delimited JSON, split incrementally: ``feed(bytes) -> list[bytes]`` (each line without
    its ``\\n``; a ``\\r`` before it stays, as blank lines do: the reader skips them), ``flush()``
    at the end of the stream (the unterminated last line, if any).  Bounded as :class:`SSEDecoder` is."""

    __slots__ = ("_buf", "_more", "_more_len", "max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_STREAM_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._more: list[bytes] = []
        self._more_len = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        limit = self.max_line_bytes
        if self._buf:
            if len(self._buf) >= _PIECES and b"\n" not in chunk:  # a long line goes on
                if chunk:
                    self._more.append(chunk)
                    self._more_len += len(chunk)
                    if len(self._buf) + self._more_len > limit:
                        raise stream_line_error(limit)
                return []
            if self._more:
                buf = b"".join((self._buf, *self._more, chunk))
                self._more, self._more_len = [], 0
            else:
                buf = self._buf + chunk
        else:
            buf = chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(buf) > limit:  # only then can one line be over it
            for line in lines:
                if len(line) > limit:
                    raise stream_line_error(limit)
            if len(self._buf) > limit:
                raise stream_line_error(limit)
        return lines

    def flush(self) -> list[bytes]:
        buf = b"".join((self._buf, *self._more)) if self._more else self._buf
        self._buf, self._more, self._more_len = b"", [], 0
        return [buf] if buf else []
