# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Server-sent events, split incrementally: the compiled twin of ``_sse_py.py``.

Same rules, same bound, same results (tests/test_sse.py runs both); a hand-written byte
loop because this is the per-chunk hot path of every upstream stream.
"""

from libc.string cimport memchr

from fastroute._speedups._sse_py import SSEEvent
from fastroute.limits import MAX_STREAM_LINE_BYTES, stream_line_error

cdef bytes _BOM = b"\xef\xbb\xbf"
#: an unfinished line this long is kept in pieces (shorter ones are joined to the next chunk at once)
cdef Py_ssize_t _PIECES = 16384


cdef inline bint _has(bytes chunk, int c):
    return memchr(<const char*>chunk, c, len(chunk)) != NULL


cdef class SSEDecoder:
    cdef bytes _buf
    cdef list _more
    cdef Py_ssize_t _more_len
    cdef list _data
    cdef Py_ssize_t _size
    cdef object _event
    cdef object _last_id
    cdef object _retry
    cdef bint _started
    cdef bint _skip_lf
    cdef public Py_ssize_t max_line_bytes

    def __init__(self, Py_ssize_t max_line_bytes=MAX_STREAM_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._reset()

    cdef void _reset(self):
        self._buf = b""
        self._more = []
        self._more_len = 0
        self._data = []
        self._size = 0
        self._event = None
        self._last_id = None
        self._retry = None
        self._started = False
        self._skip_lf = False

    def feed(self, bytes chunk):
        cdef list events = []
        cdef Py_ssize_t n, pos, i, start
        cdef Py_ssize_t limit = self.max_line_bytes
        cdef const unsigned char* p
        cdef bytes buf
        cdef unsigned char c
        if not chunk:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if (<const unsigned char*>chunk)[0] == 10:
                chunk = chunk[1:]
                if not chunk:
                    return events
        if self._buf:
            if len(self._buf) >= _PIECES and not _has(chunk, 10) and not _has(chunk, 13):  # a long line goes on
                self._more.append(chunk)
                self._more_len += len(chunk)
                if len(self._buf) + self._more_len > limit:
                    raise stream_line_error(limit)
                return events
            if self._more:
                buf = b"".join([self._buf] + self._more + [chunk])
                self._more = []
                self._more_len = 0
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
        p = buf
        n = len(buf)
        pos = 0
        i = 0
        while i < n:
            c = p[i]
            if c == 10 or c == 13:
                if i - pos > limit:
                    raise stream_line_error(limit)
                self._line(p, pos, i, events)
                if c == 13:
                    if i + 1 < n:
                        if p[i + 1] == 10:
                            i += 1
                    else:
                        self._skip_lf = True
                i += 1
                pos = i
            else:
                i += 1
        self._buf = buf[pos:] if pos < n else b""
        if n - pos > limit:
            raise stream_line_error(limit)
        return events

    cdef void _line(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t end, list events) except *:
        cdef Py_ssize_t colon = -1, j, vstart
        cdef Py_ssize_t flen
        cdef bytes data
        if start == end:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                events.append(SSEEvent(self._event or "message", data, self._last_id, self._retry))
                self._data = []
            self._event = None
            self._retry = None
            return
        if p[start] == 58:  # ":" comment
            return
        for j in range(start, end):
            if p[j] == 58:
                colon = j
                break
        if colon < 0:
            flen = end - start
            vstart = end
        else:
            flen = colon - start
            vstart = colon + 1
            if vstart < end and p[vstart] == 32:
                vstart += 1
        if flen == 4 and p[start] == 100 and p[start + 1] == 97 and p[start + 2] == 116 and p[start + 3] == 97:
            if self._data:  # "data"
                self._size += end - vstart + 1
                if self._size > self.max_line_bytes:
                    raise stream_line_error(self.max_line_bytes, "an event")
            else:
                self._size = end - vstart
            self._data.append(p[vstart:end])
        elif flen == 5 and p[start] == 101 and p[start + 1] == 118 and p[start + 2] == 101 \
                and p[start + 3] == 110 and p[start + 4] == 116:  # "event"
            self._event = p[vstart:end].decode("utf-8", "replace")
        elif flen == 2 and p[start] == 105 and p[start + 1] == 100:  # "id"
            for j in range(vstart, end):
                if p[j] == 0:
                    return
            self._last_id = p[vstart:end].decode("utf-8", "replace")
        elif flen == 5 and p[start] == 114 and p[start + 1] == 101 and p[start + 2] == 116 \
                and p[start + 3] == 114 and p[start + 4] == 121:  # "retry"
            if vstart == end:
                return
            for j in range(vstart, end):
                if p[j] < 48 or p[j] > 57:
                    return
            self._retry = int(p[vstart:end])

    def flush(self):
        """End of stream: the unterminated last line counts, and a pending event is dispatched."""
        cdef list events = []
        cdef bytes buf = b"".join([self._buf] + self._more) if self._more else self._buf
        if buf and not (not self._started and _BOM.startswith(buf)):
            self._line(buf, 0, len(buf), events)
        self._line(b"", 0, 0, events)
        self._reset()
        return events


cdef class NDJSONSplitter:
    """Newline-delimited JSON, split incrementally: the compiled twin of ``_sse_py.NDJSONSplitter``."""

    cdef bytes _buf
    cdef list _more
    cdef Py_ssize_t _more_len
    cdef public Py_ssize_t max_line_bytes

    def __init__(self, Py_ssize_t max_line_bytes=MAX_STREAM_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._more = []
        self._more_len = 0

    def feed(self, bytes chunk):
        cdef Py_ssize_t limit = self.max_line_bytes
        cdef bytes buf
        cdef list lines
        cdef bytes line
        if self._buf:
            if len(self._buf) >= _PIECES and not _has(chunk, 10):  # a long line goes on
                if chunk:
                    self._more.append(chunk)
                    self._more_len += len(chunk)
                    if len(self._buf) + self._more_len > limit:
                        raise stream_line_error(limit)
                return []
            if self._more:
                buf = b"".join([self._buf] + self._more + [chunk])
                self._more = []
                self._more_len = 0
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

    def flush(self):
        cdef bytes buf = b"".join([self._buf] + self._more) if self._more else self._buf
        self._buf = b""
        self._more = []
        self._more_len = 0
        return [buf] if buf else []
