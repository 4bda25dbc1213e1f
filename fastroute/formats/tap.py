"""Reading a passed-through stream on the side, with the dialect's own decoder."""

from __future__ import annotations

from typing import Any

from fastroute.canonical import Usage


class DecoderTap:
    """Forwards every chunk untouched; afterwards, decodes it for the log: text, usage, errors."""

    __slots__ = ("_decoder", "text_parts", "usage", "error")

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self.text_parts: list[str] = []
        self.usage: Usage | None = None
        self.error: str | None = None

    def forward(self, chunk: bytes) -> bytes:
        return chunk

    def feed(self, chunk: bytes) -> None:
        for ev in self._decoder.feed(chunk):
            if ev.kind == "text":
                self.text_parts.append(ev.text)
            elif ev.kind in ("usage", "start") and ev.usage is not None:
                self.usage = ev.usage
            elif ev.kind == "error":
                self.error = ev.error.message

    @property
    def text(self) -> str:
        return "".join(self.text_parts)
