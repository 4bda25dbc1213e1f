"""The one switch: ``FASTROUTE_NO_EXTENSIONS``, read here, the same way at build time and at runtime.

setup.py cannot import the package before it is built, so it loads this file by its path
(``fastroute/_speedups/_switch.py``): nothing here imports fastroute at module level.
``1``, ``true``, ``yes``, ``on`` go without the compiled speedups; ``0``, ``false``, ``no``,
``off`` or nothing (unset, empty) use them; the case does not matter; anything else is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

VARIABLE = "FASTROUTE_NO_EXTENSIONS"
_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"", "0", "false", "no", "off"})


class SwitchError(ValueError):
    """The switch holds neither yes nor no."""


def no_extensions(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``FASTROUTE_NO_EXTENSIONS`` (in ``environ``, default the process's) says
    to go without the compiled speedups.  Raises :class:`SwitchError` for any other value."""
    raw = (os.environ if environ is None else environ).get(VARIABLE, "")
    value = raw.strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise SwitchError(f"{raw!r} is neither yes nor no: set it to 1, true, yes or on to go without the "
                      "compiled speedups, or to 0, false, no, off or nothing to use them")


NO_EXTENSIONS = no_extensions()


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
