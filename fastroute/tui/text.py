"""Text from a client or a provider, made safe to put on a terminal.

Markup is the widgets' business (they are told not to read any); control characters are
this module's: an ESC in a reply would otherwise reach the terminal as the start of an
escape sequence (clear the screen, retitle the window, write the clipboard).  Each is
shown as a visible stand-in instead: C0 controls as their Unicode pictures (ESC is ``␛``),
DEL as ``␡``, C1 controls as ``\\x9b``.
"""

from __future__ import annotations

from typing import Any

_ONE_LINE = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421} | {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)}
_LINES = {c: v for c, v in _ONE_LINE.items() if c not in (0x09, 0x0A)}  # tabs and newlines stay


def one_line(value: Any) -> str:
    """``value`` as text on one line: every control character, newlines too, made visible."""
    return str(value).translate(_ONE_LINE)


def lines(value: Any) -> str:
    """``value`` as text that may span lines: newlines and tabs kept, other controls made visible."""
    return str(value).translate(_LINES)
