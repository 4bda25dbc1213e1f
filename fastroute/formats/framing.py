"""Where a stream's messages end, for forwarding whole messages only."""

from __future__ import annotations


def sse_boundary(data: bytes) -> int:
    """The index just past the last complete SSE event in ``data`` (0 if none)."""
    cut = data.rfind(b"\n\n") + 2
    crlf = data.rfind(b"\r\n\r\n") + 4
    cr = data.rfind(b"\r\r") + 2
    return max(cut if cut > 1 else 0, crlf if crlf > 3 else 0, cr if cr > 1 else 0)


def ndjson_boundary(data: bytes) -> int:
    """The index just past the last complete line in ``data`` (0 if none)."""
    return data.rfind(b"\n") + 1
