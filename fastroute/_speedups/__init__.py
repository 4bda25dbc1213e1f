"""Hot paths, compiled with Cython, each beside a pure-Python twin of identical behaviour.

``FASTROUTE_NO_EXTENSIONS=1`` (read here once, and by setup.py) forces the Python
versions.  Both implementations stay importable by name (``SSEDecoderPy``,
``SSEDecoderC``) so tests and benchmarks can run each; :func:`implementation`
says which one is live.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fastroute._speedups._sse_py import SSEDecoder as SSEDecoderPy
from fastroute._speedups._sse_py import SSEEvent

NO_EXTENSIONS = os.environ.get("FASTROUTE_NO_EXTENSIONS", "") not in ("", "0")

SSEDecoderC: type | None
if TYPE_CHECKING or NO_EXTENSIONS:
    SSEDecoderC = None
else:
    try:
        from fastroute._speedups._sse_c import SSEDecoder as SSEDecoderC
    except ImportError:  # not compiled: no compiler at install time
        SSEDecoderC = None

SSEDecoder = SSEDecoderC if SSEDecoderC is not None else SSEDecoderPy


def implementation() -> str:
    """``"compiled"`` when the Cython speedups are live, else ``"python"``."""
    return "compiled" if SSEDecoderC is not None else "python"


__all__ = ["NO_EXTENSIONS", "SSEDecoder", "SSEDecoderC", "SSEDecoderPy", "SSEEvent", "implementation"]
