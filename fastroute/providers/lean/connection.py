"""One keep-alive HTTP/1.1 connection: an ``asyncio.Protocol`` on the loop's own transport.

Responses are parsed by ``httptools`` (llhttp) straight from ``data_received``; the
protocol's callbacks fill in the status, the headers and the body as they come.  One
request at a time, and one future (``_waiter``) the caller awaits: woken when the whole
response is in (``post``, ``get_json``), or when its head is in and then for each body
chunk (``stream``).

A streamed body waits in a bounded buffer: past ``high_water`` bytes the transport stops
reading until the consumer takes them, so nothing is read faster than the client takes it.

The read timeout is the time the caller waits for the next byte.  One timer per connection,
armed lazily: bytes only move a timestamp, and the timer, when it fires, either times the
request out or re-arms itself for the new deadline; a consumer that is busy elsewhere (a
full buffer, a paused transport) is never timed out for it.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any, NoReturn

from httptools import HttpParserError, HttpResponseParser

from fastroute.errors import UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from fastroute.providers.lean.pool import Pool

#: no body, whatever the headers say (a HEAD is never sent)
_NO_BODY = frozenset({204, 304})
#: content codings decoded here; any other is handed on as it came (the header says which)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}
#: a timer may fire this much early (libuv counts milliseconds)
_SLACK = 0.002


class Stale(Exception):
    """A pooled connection the upstream had closed before any byte of the answer came back:
    the request may go once more, on a new connection."""


class _Stop(Exception):
    """Raised in a parser callback to stop the parser: a second answer to one request, or an
    answer that cannot be decoded (``error`` then says why)."""


class Connection(asyncio.Protocol):
    __slots__ = (
        "pool", "loop", "transport", "parser", "closed", "idle", "reused", "idle_since",
        "status", "headers", "body", "buffered", "complete", "keep_alive", "error",
        "_waiter", "_active", "_stream", "_got", "_head", "_until_close", "_paused", "_high",
        "_decoder", "_timer", "_timer_at", "_timeout", "_last",
    )

    def __init__(self, pool: Pool, high_water: int) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: Any = None
        self.parser: Any = HttpResponseParser(self)
        self.closed = False
        #: waiting in the pool
        self.idle = False
        #: taken from the pool (not opened for this request)
        self.reused = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._active = False
        self._stream = False
        self._got = False
        self._head = False
        self._until_close = False
        self._paused = False
        self._high = high_water
        self._decoder: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timeout = 0.0
        self._last = 0.0

    # ── the caller's side ─────────────────────────────────────────────────

    def send(self, data: bytes, read_timeout: float, stream: bool) -> asyncio.Future[None]:
        """Write one whole request; the future is done when the answer (``stream``: its head) is in."""
        if self.closed or self.transport.is_closing():
            raise Stale()
        self._active = True
        self._stream = stream
        self.status = 0
        self.headers = {}
        self.body = []
        self.buffered = 0
        self.complete = self._got = self._head = False
        self.keep_alive = False
        self.error = None
        self._decoder = None
        waiter = self._waiter = self.loop.create_future()
        self._timeout = read_timeout
        self._last = now = self.loop.time()
        if self._timer is None or self._timer_at > now + read_timeout + _SLACK:
            self._arm(now + read_timeout)
        self.transport.write(data)
        return waiter

    def wait(self) -> asyncio.Future[None]:
        """A future done when more of a streamed body is in, it ends, or it fails."""
        waiter = self._waiter = self.loop.create_future()
        self._last = now = self.loop.time()  # from now on, waiting is the upstream's doing
        if self._timer is None:
            self._arm(now + self._timeout)
        return waiter

    def take(self) -> bytes:
        """All of the streamed body that is in, in one piece; reading resumes if it was paused."""
        body = self.body
        self.body = []
        self.buffered = 0
        if self._paused:
            self._paused = False
            if not self.closed:
                self.transport.resume_reading()
        return body[0] if len(body) == 1 else b"".join(body)

    def finish(self) -> None:
        """The caller is done with this response: back to the pool if it ended cleanly, else closed."""
        self._active = False
        self.body = []
        if self.complete and self.keep_alive and not self.closed:
            if self._paused:  # the answer ended with its buffer full: read again, for the next one
                self._paused = False
                self.transport.resume_reading()
            self.pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Close now, without reading the rest (an unfinished request is cancelled upstream)."""
        self.keep_alive = False
        if self._active and not self.complete and self.error is None:
            self.error = UpstreamProtocolError("the request was cancelled")
            self._wake_error(self.error)
        if not self.closed:
            self.transport.abort()

    # ── the timer ─────────────────────────────────────────────────────────

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None or self.closed:
            return  # nobody waits: disarmed until someone does
        deadline = self._last + self._timeout
        if self.loop.time() + _SLACK >= deadline:
            self._fail(UpstreamTimeout("read timeout"))
        else:
            self._arm(deadline)

    # ── the transport's side ──────────────────────────────────────────────

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for (an idle connection): not to be trusted again
            self.transport.abort()
            return
        self._got = True
        self._last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:  # a _Stop from a callback comes out as one too
            if self.error is not None:  # a callback's: the answer cannot be decoded
                self._fail(self.error)
            elif self.complete:  # bytes after the whole answer: it stands, the connection is not trusted again
                self.keep_alive = False
                self.transport.abort()
            else:
                self._fail(UpstreamProtocolError(f"the upstream's response is not valid HTTP: {exc}"), exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool.forget(self)
        if not self._active or self.complete or self.error is not None:
            return
        if self._head and self._until_close and exc is None:
            try:
                self._end()  # read to close: the close is the end
            except _Stop:
                self._fail(self.error)  # type: ignore[arg-type]
        elif not self._got:
            self._fail(Stale() if self.reused else UpstreamProtocolError("the upstream closed the connection"), exc)
        elif not self._head:
            self._fail(UpstreamProtocolError("the upstream closed the connection"), exc)
        else:
            self._fail(UpstreamProtocolError("the upstream's response was cut off"), exc)

    # ── httptools' callbacks ──────────────────────────────────────────────

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        headers = self.headers
        if key in headers:
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100, 103: informational, the answer follows
            self.headers = {}
            return
        self.status = status
        self._head = True
        headers = self.headers
        te = headers.get("transfer-encoding")
        self._until_close = (status not in _NO_BODY
                             and ("chunked" not in te.lower() if te is not None else "content-length" not in headers))
        coding = headers.get("content-encoding")
        if coding is not None:
            wbits = _WBITS.get(coding.strip().lower())
            if wbits is not None:
                self._decoder = zlib.decompressobj(wbits)
        if self._stream:
            self._wake()

    def on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._undecodable(exc)
            if not data:
                return
        self.body.append(data)
        if self._stream:
            self.buffered += len(data)
            if self.buffered >= self._high and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self._head:  # the end of an informational answer
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._end()

    # ── ends ──────────────────────────────────────────────────────────────

    def _end(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
                if not self._decoder.eof:
                    raise zlib.error("the compressed stream ends early")
            except zlib.error as exc:
                self._undecodable(exc)
            if tail:
                self.body.append(tail)
        self.complete = True
        self._wake()

    def _undecodable(self, exc: zlib.error) -> NoReturn:
        error = UpstreamProtocolError("the upstream's compressed response could not be decoded")
        error.__cause__ = exc
        self.error = error
        raise _Stop()  # in a parser callback: data_received fails the request with it

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_error(self, error: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(error)

    def _fail(self, error: BaseException, cause: BaseException | None = None) -> None:
        """End the request with ``error`` (raised ``from cause``) and drop the connection."""
        if cause is not None:
            error.__cause__ = cause
        self.error = error
        self.keep_alive = False
        self._wake_error(error)
        if not self.closed:
            self.transport.abort()

