"""A lean asyncio Redis client (RESP2) for the few commands the rate-limit counters send.

redis-py's asyncio client costs ~115-240 µs of the event loop's CPU a command on this machine
(no hiredis); this one is an ``asyncio.Protocol`` on the loop's own transport (uvloop's or
asyncio's), like the lean HTTP client of ``fastroute/providers/lean/``, and does only what the
counters need (``benchmarks/test_bench_resp.py`` measures both):

- :class:`RespClient` ``(url, password=None, *, timeout_s=1.0)``: one connection, opened on
  the first command (``AUTH`` and ``SELECT`` written with it, not waited for), opened again
  by the first command after it failed.  No background task, no retry: the caller decides.
- ``await client.execute("SET", key, value, "PX", 1000)``: one command, its reply.
- ``await client.execute_many([(...), (...)])``: many commands in one write, their replies
  in order (commands sent meanwhile by other callers are pipelined too: requests in flight
  are answered in FIFO order).
- ``script = client.script(lua)``, ``await script(keys, args)``: ``EVALSHA``; on
  ``NOSCRIPT`` (Redis restarted, ``SCRIPT FLUSH``) ``SCRIPT LOAD`` and ``EVALSHA`` again,
  once.  ``script.command(keys, args)`` is the same as one command of ``execute_many``
  (reloaded alike).  ``client.evalsha(sha, keys, args)`` for a sha of a script made here.
- ``client.send_soon(data, on_reply)``: an encoded command (:func:`encode`,
  :meth:`Script.encode`) sent with the client's next write, or ``SOON_LINGER_S`` later at the
  latest, its reply (or the error that took it) passed to ``on_reply(reply, error)``: what does
  not need an answer at once rides with what does (the counters' adds with the next request's
  check), no write, wake-up, future or task of its own.  ``client.flush_soon()`` writes them now.
- ``await client.close()``: the connection closed and its transport gone.

Replies: integers as ``int``, bulk strings as ``bytes``, simple strings (``+OK``) as
``str``, arrays as ``list``, nil as ``None``; an error reply is raised as :class:`RespError`
(inside an array it stays there, a :class:`RespError` instance).  Arguments may be ``str``
(UTF-8), ``bytes``, ``int`` or ``float``.

URLs, read as :func:`fastroute.storage.redis.where` reads them: ``redis://[[user]:password@]
host[:port][/db]`` (port 6379, db 0; the query is ignored) and ``unix://path[?db=N]``.
``rediss://`` is the same over TLS (the system's certificate authorities, the host name
checked).  The ``password`` argument, else
the URL's (an empty one is none), is sent with ``AUTH`` (``AUTH user password`` when the URL
names a user).  The password appears in no message, repr or exception: not even in an error
reply that would quote it.

Errors::

    RespException                   every error of this module
    ├── RespError                   Redis answered with an error (``-ERR``, ``-NOAUTH``,
    │                               ``-WRONGPASS``, ``-OOM``, ``-READONLY``, ``-NOSCRIPT``, a
    │                               script's error); ``code`` is its first word
    └── RespUnavailable (OSError)   cannot connect (refused, reset, unreachable), the connection
        │                           was lost or closed, Redis sent bytes that are not RESP2,
        │                           or the client is closed; every command waiting on that
        │                           connection fails with it
        └── RespTimeout             no connection within ``timeout_s``, or a command not
                                    answered within ``timeout_s`` of being sent (the
                                    connection is then closed, as redis-py's socket timeout does)

A wrong password is a :class:`RespError` (``WRONGPASS``): the handshake's error fails the
commands written with it and closes the connection; the next command opens a new one.  No
password where one is needed: each command fails with ``NOAUTH``.

``timeout_s`` bounds the connect, then each command's wait for the whole of its reply, counted
from when it was sent (a reply of many megabytes must come within it too); a Redis that stops
reading is noticed by it as well (there is no other bound on what waits to be written).  A
command sent while others are in flight is written one turn of the loop later, with the others
sent meanwhile, in one write.  A connection being opened when :meth:`RespClient.close` is
called is closed as soon as it is made.  The commands of a client must run on one event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["RespClient", "RespError", "RespException", "RespTimeout", "RespUnavailable", "Script"]

#: an argument of a command
Arg = str | bytes | int | float

_CRLF = b"\r\n"
#: ``$n`` and ``*n`` headers and small decimal numbers, made once (bytes formatting costs ~0.3 µs)
_SIZES = tuple(b"$%d" % n for n in range(1024))
_COUNTS = tuple(b"*%d" % n for n in range(256))
#: a timer may fire this much early (libuv counts milliseconds)
_SLACK = 0.002
#: how long a send_soon command waits at most for a write to ride with
SOON_LINGER_S = 0.005


class RespException(Exception):
    """Every error of this module."""


class RespError(RespException):
    """An error reply of Redis; ``code`` is its first word (``ERR``, ``NOSCRIPT``, ``WRONGPASS``...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = message.partition(" ")[0]


class RespUnavailable(RespException, OSError):
    """Redis cannot be reached, or the connection failed: the message says where (no password) and why."""


class RespTimeout(RespUnavailable):
    """No connection, or no answer, within ``timeout_s``."""


# ── the URL ───────────────────────────────────────────────────────────────

def _parse_url(url: str) -> tuple[str, Any, str | None, str | None, int]:
    """``("tcp" | "tls", (host, port), user, password, db)`` or ``("unix", path, None, None, db)``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("a Redis URL starts with redis:// or unix://")
    scheme = scheme.lower()
    if scheme == "unix":
        path, _, query = rest.partition("?")
        db = next((v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "db"), "") or "0"
        if not path:
            raise ValueError("unix:// needs the socket's path (unix:///run/redis.sock)")
        return "unix", path, None, None, _db(db, "unix://")
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"{scheme}:// is not a Redis URL (redis://, rediss:// or unix://)")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    host, port_text = hostport, ""
    if hostport.startswith("["):  # [::1]:6379
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif ":" in hostport:
        host, _, port_text = hostport.rpartition(":")
    # the messages quote no part of the URL: a password with a '/' not percent-encoded would be in it
    if not port_text:
        port = 6379
    elif not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port of the redis:// URL is not a number from 1 to 65535")
    else:
        port = int(port_text)
    kind = "tls" if scheme == "rediss" else "tcp"
    return kind, (host or "localhost", port), user, password, _db(path.partition("?")[0] or "0", f"{scheme}://")


def _db(text: str, scheme: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database of the {scheme} URL is not a number (/0, /1, ?db=2...)")
    return int(text)


# ── encoding ──────────────────────────────────────────────────────────────

def _coerce(arg: Any) -> bytes:
    """An argument that is not a ``str``, ``bytes`` or ``int``."""
    if isinstance(arg, bool) or not isinstance(arg, (str, bytes, bytearray, memoryview, int, float)):
        raise TypeError(f"a Redis argument is str, bytes, int or float, not {type(arg).__name__}")
    if isinstance(arg, float):
        return repr(arg).encode()
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int):
        return b"%d" % arg
    return bytes(arg)


def _put(parts: list[bytes], args: Iterable[Any]) -> None:
    """Append each argument's ``$len`` and bytes (joined with CRLF by the caller)."""
    append = parts.append
    sizes = _SIZES
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is int:
            arg = b"%d" % arg
        elif kind is not bytes:
            arg = _coerce(arg)
        n = len(arg)
        append(sizes[n] if n < 1024 else b"$%d" % n)
        append(arg)


def encode(args: Sequence[Any]) -> bytes:
    """One command as RESP2: ``*n``, then ``$len`` and the bytes of each argument."""
    if not args:
        raise ValueError("a Redis command needs at least its name")
    n = len(args)
    parts = [_COUNTS[n] if n < 256 else b"*%d" % n]
    _put(parts, args)
    parts.append(b"")
    return _CRLF.join(parts)


# ── decoding ──────────────────────────────────────────────────────────────

class RespParser:
    """An incremental RESP2 decoder: ``feed(chunk)`` returns the replies completed by it, in order.

    What a chunk leaves unfinished is kept (the unfinished element's bytes, the arrays still
    being filled), however the replies are cut; a bulk string of known size is not looked at
    again until all of it is in.  An error reply comes back as a :class:`RespError` instance.
    Bytes that are not RESP2 raise :class:`ValueError` (the parser cannot be used after it)."""

    __slots__ = ("_need", "_rest", "_stack")

    def __init__(self) -> None:
        self._rest = bytearray()
        #: bytes of ``_rest`` needed before it is worth parsing again (0: any)
        self._need = 0
        #: the arrays being filled, outermost first: [items, how many still to come]
        self._stack: list[list[Any]] = []

    def feed(self, data: bytes) -> list[Any]:
        rest = self._rest
        if rest:
            rest += data
            if len(rest) < self._need:
                return []
            data = bytes(rest)
            rest.clear()
            self._need = 0
        out: list[Any] = []
        stack = self._stack
        size = len(data)
        find = data.find
        pos = 0
        try:
            while pos < size:
                eol = find(b"\r\n", pos)
                if eol < 0:
                    break
                kind = data[pos]
                if kind == 42:  # '*' array
                    n = int(data[pos + 1:eol])
                    pos = eol + 2
                    if n > 0:
                        value: Any = None
                        if pos < size and data[pos] == 58:  # integers (the counters' scripts): in one go
                            ints = data[pos + 1:pos + 24 * n].split(b"\r\n:", n - 1)  # a line is <= 23 bytes
                            if len(ints) == n:
                                tail = ints[-1]
                                cut = tail.find(b"\r\n")
                                if cut >= 0:
                                    ints[-1] = tail[:cut]
                                    try:
                                        value = list(map(int, ints))
                                    except ValueError:  # not all integers: one by one, below
                                        pass
                                    else:
                                        pos += 3 * n + sum(map(len, ints))  # ':' and CRLF each
                        if value is None:
                            stack.append([[], n])
                            continue
                    else:
                        value = [] if n == 0 else None
                elif kind == 58:  # ':' integer
                    value = int(data[pos + 1:eol])
                    pos = eol + 2
                elif kind == 36:  # '$' bulk string
                    n = int(data[pos + 1:eol])
                    if n < 0:
                        value = None
                        pos = eol + 2
                    else:
                        end = eol + 2 + n
                        if end + 2 > size:
                            self._need = end + 2 - pos
                            break
                        if data[end:end + 2] != b"\r\n":
                            raise ValueError("a bulk string is longer than its size")
                        value = data[eol + 2:end]
                        pos = end + 2
                elif kind == 43:  # '+' simple string
                    value = data[pos + 1:eol].decode("utf-8", "replace")
                    pos = eol + 2
                elif kind == 45:  # '-' error
                    value = RespError(data[pos + 1:eol].decode("utf-8", "replace"))
                    pos = eol + 2
                else:
                    raise ValueError(f"not a RESP2 reply (a line starts with {data[pos:pos + 1]!r})")
                while stack:
                    frame = stack[-1]
                    frame[0].append(value)
                    frame[1] -= 1
                    if frame[1]:
                        break
                    value = stack.pop()[0]
                else:
                    out.append(value)
        except ValueError:
            self._rest.clear()
            stack.clear()
            raise
        if pos < size:
            rest += data[pos:] if pos else data
        return out


# ── the connection ────────────────────────────────────────────────────────

class _Reply:
    """Where the reply of a :meth:`RespClient.send_soon` command goes: ``on_reply(reply, error)``
    called with the reply, or with the error that took it (an error reply, the connection lost, a
    timeout).  It stands where a future stands among a connection's waiters."""

    __slots__ = ("on_reply",)

    def __init__(self, on_reply: Any) -> None:
        self.on_reply = on_reply

    def done(self) -> bool:
        return False

    def set_result(self, reply: Any) -> None:
        self.on_reply(reply, None)

    def set_exception(self, error: BaseException) -> None:
        self.on_reply(None, error)


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, each answered by the next reply (FIFO).

    ``waiters`` holds ``(future, sent_at)`` per command in flight (``future`` None for the
    handshake's).  A command sent while others are in flight is written with the next write,
    one turn of the loop later: many callers' commands go out in one write.  One timer: when it
    fires, the oldest command's deadline has passed (the connection fails) or it is set again
    for that deadline."""

    __slots__ = ("_flushing", "_hello", "_hellos", "_out", "_timer", "client", "closed", "error", "loop", "lost",
                 "parser", "timeout", "transport", "waiters")

    def __init__(self, client: RespClient, loop: asyncio.AbstractEventLoop, hello: bytes, hellos: int) -> None:
        self.client = client
        self.loop = loop
        self.timeout = client.timeout_s
        self.transport: Any = None
        self.parser = RespParser()
        self.closed = False
        #: what ended it (raised to commands sent after)
        self.error: RespException = RespUnavailable(f"{client.where}: not connected")
        #: done when the transport is gone (connection_lost)
        self.lost: asyncio.Future[None] = loop.create_future()
        self.waiters: deque[tuple[asyncio.Future[Any] | None, float]] = deque()
        self._hello = hello
        self._hellos = hellos
        self._out: list[bytes] = []
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None

    # ── the client's side ─────────────────────────────────────────────────

    def request(self, data: bytes) -> asyncio.Future[Any]:
        if self.closed:  # since the caller was handed it (AUTH refused, lost)
            raise _copy(self.error)
        future = self.loop.create_future()
        self.send(data, (future,))
        return future

    def request_many(self, commands: list[bytes]) -> list[asyncio.Future[Any]]:
        if self.closed:
            raise _copy(self.error)
        loop = self.loop
        futures = [loop.create_future() for _ in commands]
        self.send(b"".join(commands), futures)
        return futures

    def send(self, data: bytes, targets: Sequence[Any]) -> None:
        """Write ``data`` (one command per target, in order), the client's :meth:`~RespClient.send_soon`
        commands first; each reply goes to its target (a future, or a :class:`_Reply`)."""
        client = self.client
        if client._soon:
            data = b"".join(client._soon) + data
            targets = (*client._soon_targets, *targets)
            client._soon.clear()
            client._soon_targets.clear()
        loop = self.loop
        waiters = self.waiters
        if waiters:  # others in flight: with the next write
            self._out.append(data)
            if not self._flushing:
                self._flushing = True
                loop.call_soon(self._flush)
        elif data:
            self.transport.write(data)
        now = loop.time()
        waiters.extend((target, now) for target in targets)
        if self._timer is None and targets:
            self._timer = loop.call_at(now + self.timeout, self._on_timer)

    def _flush(self) -> None:
        self._flushing = False
        out = self._out
        if out and not self.closed:
            data = b"".join(out)
            out.clear()
            self.transport.write(data)

    def abort(self, error: RespException) -> None:
        """Fail every command waiting with ``error`` and drop the connection."""
        self._end(error)
        if self.transport is not None:
            self.transport.abort()

    def _end(self, error: RespException | None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error if error is not None else RespUnavailable(f"{self.client.where} closed the connection")
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()[0]
            if future is not None and not future.done() and error is not None:
                future.set_exception(_copy(error))

    # ── the timer ─────────────────────────────────────────────────────────

    def _on_timer(self) -> None:
        self._timer = None
        if not self.waiters or self.closed:
            return  # nothing in flight: disarmed until a command is sent
        deadline = self.waiters[0][1] + self.timeout
        if self.loop.time() + _SLACK >= deadline:
            self.abort(RespTimeout(f"{self.client.where} did not answer within {self.timeout:g} s"))
        else:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    # ── the transport's side ──────────────────────────────────────────────

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self._hellos:  # AUTH, SELECT: written with the first commands, in the same write
            loop = self.loop
            self._out.append(self._hello)
            self._flushing = True
            loop.call_soon(self._flush)
            now = loop.time()
            self.waiters.extend((None, now) for _ in range(self._hellos))
            self._timer = loop.call_at(now + self.timeout, self._on_timer)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except ValueError as exc:
            error = RespUnavailable(f"{self.client.where} sent bytes that are not RESP2")
            error.__cause__ = exc
            self.abort(error)
            return
        waiters = self.waiters
        for reply in replies:
            if not waiters:
                self.abort(RespUnavailable(f"{self.client.where} sent a reply nobody asked for"))
                return
            future = waiters.popleft()[0]
            if type(reply) is RespError:
                reply = self.client._scrub(reply)
                if future is None:  # AUTH or SELECT refused: so are the commands sent with them
                    self.abort(reply)
                    return
                if not future.done():
                    future.set_exception(reply)
            elif future is not None and not future.done():  # done: its caller gave up (cancelled)
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = None
        if self.waiters:
            error = RespUnavailable(f"{self.client.where} closed the connection"
                                    + (f" ({type(exc).__name__})" if exc is not None else ""))
            error.__cause__ = exc
        self._end(error)
        if not self.lost.done():
            self.lost.set_result(None)


def _copy(error: RespException) -> RespException:
    """One exception per waiting caller (each raise adds its own traceback)."""
    made = type(error)(*error.args)
    made.__cause__ = error.__cause__
    return made


# ── scripts ───────────────────────────────────────────────────────────────

class Script:
    """A Lua script of one client (``client.script(lua)``), run with ``EVALSHA``.

    ``await script(keys, args)``: its reply; on ``NOSCRIPT`` the script is loaded
    (``SCRIPT LOAD``) and run again, once.  ``script.command(keys, args)``: the command for
    :meth:`RespClient.execute_many`, which reloads it alike."""

    __slots__ = ("_head", "client", "lua", "sha")

    def __init__(self, client: RespClient, lua: str | bytes) -> None:
        self.client = client
        self.lua = lua.encode() if isinstance(lua, str) else lua
        self.sha = hashlib.sha1(self.lua).hexdigest()
        self._head = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode()

    def __repr__(self) -> str:
        return f"<Script {self.sha}>"

    def command(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> tuple[Arg, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def encode(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> bytes:
        """``EVALSHA`` as :func:`encode` makes it, its head made once."""
        nkeys = len(keys)
        n = 3 + nkeys + len(args)
        digits = b"%d" % nkeys
        parts = [_COUNTS[n] if n < 256 else b"*%d" % n, self._head, _SIZES[len(digits)], digits]
        _put(parts, (*keys, *args))
        parts.append(b"")
        return _CRLF.join(parts)

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        client = self.client
        data = self.encode(keys, args)
        conn = client._conn
        if conn is None or conn.closed:
            conn = await client._open()
        try:
            return await conn.request(data)
        except RespError as exc:
            if exc.code != "NOSCRIPT":
                raise
        replies = await client._many([encode(("SCRIPT", "LOAD", self.lua)), data])  # once, in one write
        for reply in replies:
            if type(reply) is RespError:
                raise reply
        return replies[1]


# ── the client ────────────────────────────────────────────────────────────

class RespClient:
    """One connection to one Redis, opened on the first command; see the module's docstring.

    ``timeout_s`` bounds the connect and each command's wait for its reply."""

    def __init__(self, url: str, password: str | None = None, *, timeout_s: float = 1.0) -> None:
        from fastroute.storage.redis import where

        self.where = where(url)
        kind, address, user, url_password, db = _parse_url(url)
        self._kind = kind
        self._address = address
        self.db = db
        self.timeout_s = timeout_s
        secret = password or url_password or None  # "" is no password (an env var set empty)
        hello: list[bytes] = []
        if secret is not None:
            hello.append(encode(("AUTH", user, secret) if user else ("AUTH", secret)))
        if db:
            hello.append(encode(("SELECT", db)))
        #: written first on every new connection, answered before anything else
        self._hello = b"".join(hello)
        self._hellos = len(hello)
        self._secret = secret
        self._conn: _Connection | None = None
        #: callers waiting for the connection being opened by another (None: open it yourself)
        self._opening: list[asyncio.Future[_Connection | None]] | None = None
        self._scripts: dict[str, Script] = {}
        self._closed = False
        #: send_soon's commands not written yet, where their replies go, and the timer that writes them
        self._soon: list[bytes] = []
        self._soon_targets: list[_Reply] = []
        self._soon_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<RespClient {self.where}>"

    # ── commands ──────────────────────────────────────────────────────────

    async def execute(self, *args: Arg) -> Any:
        """One command (``execute("SET", key, value, "PX", 500)``); its reply, or raises (see the module)."""
        data = encode(args)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._open()
        return await conn.request(data)

    async def execute_many(self, commands: Iterable[Sequence[Arg]], *, raise_on_error: bool = True) -> list[Any]:
        """Many commands in one write; their replies in order.  An error reply raises the first
        :class:`RespError` once every reply is in (``raise_on_error=False``: the errors are in the list).
        ``EVALSHA`` of a script of this client answered ``NOSCRIPT`` is loaded and sent again, once."""
        commands = list(commands)
        if not commands:
            return []
        replies = await self._many([encode(c) for c in commands])
        again = [i for i, reply in enumerate(replies) if type(reply) is RespError and reply.code == "NOSCRIPT"
                 and self._script_of(commands[i]) is not None]
        if again:
            scripts = {self._script_of(commands[i]) for i in again}
            loads = [encode(("SCRIPT", "LOAD", s.lua)) for s in scripts if s is not None]
            retried = await self._many(loads + [encode(commands[i]) for i in again])
            for reply in retried[:len(loads)]:
                if type(reply) is RespError:
                    raise reply
            for i, reply in zip(again, retried[len(loads):], strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if type(reply) is RespError:
                    raise reply
        return replies

    def send_soon(self, data: bytes, on_reply: Any, *, linger_s: float = SOON_LINGER_S) -> None:
        """Send an encoded command (:func:`encode`, :meth:`Script.encode`) with the next write of this
        client, or ``linger_s`` later at the latest, without waiting: ``on_reply(reply, error)`` is
        called with its reply, or with the error that took it (an error reply, :class:`RespUnavailable`,
        :class:`RespTimeout`).  Commands sent meanwhile by others ride in the same write, ahead of
        theirs: a command that does not need its answer at once costs no write and no wake-up of its own.
        ``NOSCRIPT`` is the caller's to handle (it is passed to ``on_reply``)."""
        if self._closed:
            on_reply(None, RespUnavailable(f"{self.where}: the client is closed"))
            return
        self._soon.append(data)
        self._soon_targets.append(_Reply(on_reply))
        if self._soon_timer is None:
            self._soon_timer = asyncio.get_running_loop().call_later(linger_s, self._send_soon_now)

    def flush_soon(self) -> None:
        """Write what :meth:`send_soon` holds now (their replies still come to their ``on_reply``)."""
        self._send_soon_now()

    def _send_soon_now(self) -> None:
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None
        if not self._soon:
            return
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.send(b"", ())
        else:  # no connection: opened, then written
            asyncio.get_running_loop().create_task(self._open_for_soon(), name="fastroute-resp-open")

    async def _open_for_soon(self) -> None:
        try:
            conn = await self._open()
        except RespException as exc:
            self._fail_soon(exc)
            return
        if self._soon:
            conn.send(b"", ())

    def _fail_soon(self, error: RespException) -> None:
        targets = list(self._soon_targets)
        self._soon.clear()
        self._soon_targets.clear()
        for target in targets:
            target.set_exception(_copy(error))

    def script(self, lua: str | bytes) -> Script:
        """The script, to run with ``await script(keys, args)`` (like redis-py's ``register_script``)."""
        made = Script(self, lua)
        return self._scripts.setdefault(made.sha, made)

    async def evalsha(self, sha: str, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """``EVALSHA``; reloaded on ``NOSCRIPT`` when the script was made by :meth:`script`."""
        made = self._scripts.get(sha)
        if made is not None:
            return await made(keys, args)
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        """Close the connection (commands waiting fail with :class:`RespUnavailable`) and wait for its
        transport to be gone.  Commands after it raise :class:`RespUnavailable`."""
        self._closed = True
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None
        self._fail_soon(RespUnavailable(f"{self.where}: the client was closed"))
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort(RespUnavailable(f"{self.where}: the client was closed"))
            await conn.lost

    # ── the inside ────────────────────────────────────────────────────────

    def _script_of(self, command: Sequence[Any]) -> Script | None:
        """The script of this client an ``EVALSHA`` command runs, if it is one."""
        if len(command) < 2:
            return None
        name, sha = command[0], command[1]
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if not isinstance(name, str) or name.upper() != "EVALSHA":
            return None
        return self._scripts.get(sha.decode("latin-1") if isinstance(sha, bytes) else str(sha))

    async def _many(self, data: list[bytes]) -> list[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._open()
        futures = conn.request_many(data)
        replies: list[Any] = []
        try:
            for future in futures:
                try:
                    replies.append(await future)
                except RespError as exc:
                    replies.append(exc)
        finally:
            for future in futures[len(replies):]:  # failed or cancelled: nobody will read these
                if future.done():
                    if not future.cancelled():
                        future.exception()
                else:
                    future.cancel()
        return replies

    def _scrub(self, error: RespError) -> RespError:
        secret = self._secret
        if secret is not None and secret in error.message:
            return RespError(error.message.replace(secret, "***"))
        return error

    async def _open(self) -> _Connection:
        """The open connection, or a new one (one at a time: others opening meanwhile wait for it)."""
        while True:
            if self._closed:
                raise RespUnavailable(f"{self.where}: the client is closed")
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            loop = asyncio.get_running_loop()
            if self._opening is not None:
                waiter: asyncio.Future[_Connection | None] = loop.create_future()
                self._opening.append(waiter)
                made = await waiter
                if made is not None:
                    return made
                continue  # the one opening it gave up (cancelled, or the client closed): look again
            self._opening = waiting = []
            made = None
            failed: RespException | None = None
            try:
                conn = await self._dial(loop)
                if self._closed:  # closed while it was being opened
                    conn.abort(RespUnavailable(f"{self.where}: the client was closed"))
                    raise RespUnavailable(f"{self.where}: the client is closed")
                self._conn = made = conn
                return conn
            except RespException as exc:
                failed = exc
                raise
            finally:
                self._opening = None
                for waiter in waiting:
                    if not waiter.done():
                        if failed is not None:
                            waiter.set_exception(_copy(failed))
                        else:
                            waiter.set_result(made)

    async def _dial(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        conn = _Connection(self, loop, self._hello, self._hellos)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._kind == "unix":
                    await loop.create_unix_connection(lambda: conn, self._address)
                elif self._kind == "tls":
                    import ssl

                    await loop.create_connection(lambda: conn, *self._address, ssl=ssl.create_default_context(),
                                                 server_hostname=self._address[0])
                else:
                    await loop.create_connection(lambda: conn, *self._address)
        except TimeoutError as exc:
            raise RespTimeout(f"cannot reach {self.where}: no connection within {self.timeout_s:g} s") from exc
        except OSError as exc:
            raise RespUnavailable(f"cannot reach {self.where} ({type(exc).__name__})") from exc
        return conn
