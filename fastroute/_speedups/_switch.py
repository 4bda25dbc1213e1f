"""The one switch: ``FASTROUTE_NO_EXTENSIONS`` (setup.py obeys the same variable)."""

from __future__ import annotations

import os
from typing import Any

NO_EXTENSIONS = os.environ.get("FASTROUTE_NO_EXTENSIONS", "") not in ("", "0")


def live_sse_decoder() -> Any:
    """The compiled SSE splitter when built and allowed, else the Python one."""
    if not NO_EXTENSIONS:
        try:
            from fastroute._speedups._sse_c import SSEDecoder
        except ImportError:
            pass
        else:
            return SSEDecoder
    from fastroute._speedups._sse_py import SSEDecoder as SSEDecoderPy

    return SSEDecoderPy
