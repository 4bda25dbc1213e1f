"""The size limits of a request and of an upstream stream, and the errors that say one was passed.

Each limit is a ``[server]`` setting (:class:`fastroute.config.ServerConfig`); the defaults live here,
so the config, the stream splitters and the tests agree on them.

    RequestError
    ├── HeadersTooLarge             431 request headers over ``max_header_bytes``
    ├── BadRequest
    │   └── NestingTooDeep          400 a body nested deeper than ``max_json_depth``, naming where
    └── UpstreamError
        └── UpstreamProtocolError
            └── StreamLineTooLong   502 an upstream stream line or event over ``max_stream_line_bytes``

The body's own limit (``max_body_bytes``) answers :class:`~fastroute.errors.PayloadTooLarge` (413).
Nothing here runs at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from fastroute.errors import BadRequest, RequestError, UpstreamProtocolError

#: request headers: names and values, plus 4 bytes a header for ``": "`` and the line end
MAX_HEADER_BYTES = 64 * 1024
#: nesting of a request body: the body is level 1, ``messages`` 2, ``messages[0]`` 3 ...
MAX_JSON_DEPTH = 128
#: the most ``max_json_depth`` may be: orjson.dumps, which re-encodes bodies, refuses nesting
#: beyond 254 levels, and a translated body is a few levels deeper than the client's
JSON_DEPTH_CEILING = 200
#: one line of an upstream stream (SSE or NDJSON), or the data of one SSE event
MAX_STREAM_LINE_BYTES = 16 * 1024 * 1024
#: Granian's buffer for a request's head is never smaller: it is also the most of a body Granian
#: reads at once (its own default is 408 KiB), and less would cut bodies in small pieces
GRANIAN_MIN_BUFFER = 128 * 1024
#: segments of a too-deep path shown before "..."
_PATH_SHOWN = 8


class HeadersTooLarge(RequestError):
    status: ClassVar[int] = 431
    error_type: ClassVar[str] = "request_too_large"


class NestingTooDeep(BadRequest):
    pass


class StreamLineTooLong(UpstreamProtocolError):
    """Raised by the stream splitters; the provider's name is added where the stream is read."""


def stream_line_error(limit: int, what: str = "a line") -> StreamLineTooLong:
    return StreamLineTooLong(f"the stream sent {what} of over {limit:,} bytes without ending it "
                             f"([server] max_stream_line_bytes)")


# ── headers ────────────────────────────────────────────────────────────────

def header_bytes(headers: Sequence[tuple[bytes, bytes]]) -> int:
    """The size of a request's headers as they were sent: names, values, ``": "`` and line ends."""
    size = 4 * len(headers)
    for name, value in headers:  # measured: faster than sum(map(len, chain(...))) for a dozen headers
        size += len(name) + len(value)
    return size


def check_headers(headers: Sequence[tuple[bytes, bytes]], limit: int) -> None:
    size = header_bytes(headers)
    if size > limit:
        raise HeadersTooLarge(f"the request headers take {size:,} bytes, over the limit of {limit:,} bytes "
                              "([server] max_header_bytes)")


async def drain(chunks: AsyncIterator[bytes], limit: int) -> None:
    """Read and drop the rest of a refused request body, up to ``limit`` bytes (past it, Granian
    closes the connection behind the answer); ``chunks`` is the body's stream, perhaps begun."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return


def granian_buffer(max_header_bytes: int) -> int:
    """Granian's HTTP/1 buffer (and HTTP/2 header list) size: a request head beyond it is cut by
    Granian itself (431, empty body, connection closed) before the app sees it; a head between
    ``max_header_bytes`` and this reaches the app, which answers 431 in the client's dialect."""
    return max(2 * max_header_bytes, GRANIAN_MIN_BUFFER)


# ── JSON nesting ───────────────────────────────────────────────────────────

_CONTAINERS = frozenset((dict, list))


def check_depth(body: Any, limit: int, size: int | None = None) -> None:
    """A :class:`NestingTooDeep` naming the first place ``body`` nests deeper than ``limit`` levels.

    ``size``, the bytes ``body`` was decoded from: fewer than two a level cannot nest that deep,
    and are not looked at.  Otherwise ``_speedups.shape.nests_deeper`` looks (compiled: a C walk,
    ~6-11 us on a 40-76 KB agent body; Python: level by level through ``gc.get_referents``,
    ~0.45 us a KB), and only a body too deep is walked again for the path.
    """
    if size is not None and size < 2 * (limit + 1):
        return
    from fastroute._speedups import shape  # here: the speedups' splitters import this module

    if not shape.nests_deeper(body, limit):
        return
    path = _deep_path(body, limit) or []
    shown = "".join(path[:_PATH_SHOWN]).lstrip(".") + ("..." if len(path) > _PATH_SHOWN else "")
    raise NestingTooDeep(f"'{shown}': the request body nests deeper than {limit} levels "
                         "([server] max_json_depth)", param=shown)


def _deep_path(node: Any, budget: int) -> list[str] | None:
    """The segments to the first container (in document order) ``budget`` levels below ``node``."""
    if budget == 0:
        return []
    items = node.items() if type(node) is dict else enumerate(node)
    for key, value in items:
        if type(value) in _CONTAINERS:
            below = _deep_path(value, budget - 1)
            if below is not None:
                step = f"[{key}]" if type(node) is list else f".{str(key)[:40]}"
                return [step, *below]
    return None  # not deep enough here: the caller looks further


def undecodable_depth(exc: Any, limit: int) -> NestingTooDeep | None:
    """For a body orjson refused: :class:`NestingTooDeep` when it was deeper than ``limit`` where
    orjson stopped (orjson's own ceiling is 1024 levels), else None (it is not JSON).

    Runs only on a body that failed to decode; it reads the document up to where orjson stopped.
    """
    doc, pos = getattr(exc, "doc", None), getattr(exc, "pos", None)
    if not isinstance(doc, str) or not isinstance(pos, int):
        return None
    head = doc[:pos + 1]
    if head.count("[") + head.count("{") <= limit:  # cheap: not enough openings for it at all
        return None
    # what is outside strings, in linear time: escapes go first, then every other quote opens a string
    parts = head.replace("\\\\", "").replace('\\"', "").split('"')
    outside = "".join(parts[0::2])
    depth = outside.count("[") + outside.count("{") - outside.count("]") - outside.count("}")
    if depth <= limit:
        return None
    return NestingTooDeep(f"the request body nests deeper than {limit} levels, at character {pos} "
                          "([server] max_json_depth)")
