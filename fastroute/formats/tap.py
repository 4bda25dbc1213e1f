"""Reading a passed-through stream on the side, with the dialect's own decoder."""

from __future__ import annotations

from typing import Any

from fastroute.canonical import StreamEvent, Usage


class DecoderTap:
    """Forwards every chunk untouched; afterwards, decodes it for the log: text, usage, errors.

    The decoder never raises: an event it cannot read is an ``error`` event, which the tap keeps
    (the first one) as :attr:`error` for the log.  :meth:`finish` at the end of the stream lets
    the decoder read what it still holds and say whether the stream was cut before its end.
    """

    __slots__ = ("_decoder", "text_parts", "usage", "error", "stop_reason")

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self.text_parts: list[str] = []
        self.usage: Usage | None = None
        self.error: str | None = None
        self.stop_reason: str | None = None

    def forward(self, chunk: bytes) -> bytes:
        return chunk

    def tee(self, sink: Any) -> None:
        """Also hand every event decoded from here on to ``sink(event)`` (the exact cache assembling
        the answer to keep it); a tap nobody tees pays nothing for it."""
        self._decoder = _Teed(self._decoder, sink)

    def feed(self, chunk: bytes) -> None:
        self._take(self._decoder.feed(chunk))

    def finish(self) -> None:
        """The upstream ended the stream: a stream cut before its end is an error too."""
        self._take(self._decoder.flush())

    def ended(self) -> bool:
        """The stream's own end went by (``[DONE]``, ``message_stop``, ``"done": true``); False for a
        decoder that cannot tell."""
        ended = getattr(self._decoder, "ended", None)
        return bool(ended()) if ended is not None else False

    def _take(self, events: list[StreamEvent]) -> None:
        for ev in events:
            if ev.kind == "text":
                self.text_parts.append(ev.text)
            elif ev.kind in ("usage", "start") and ev.usage is not None:
                self.usage = ev.usage
            elif ev.kind == "stop":
                self.stop_reason = ev.stop_reason
            elif ev.kind == "error" and self.error is None:
                self.error = ev.error.message

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class _Teed:
    """A stream decoder whose events are also handed to a sink."""

    __slots__ = ("_decoder", "_sink")

    def __init__(self, decoder: Any, sink: Any) -> None:
        self._decoder = decoder
        self._sink = sink

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        events = self._decoder.feed(chunk)
        for ev in events:
            self._sink(ev)
        return events

    def flush(self) -> list[StreamEvent]:
        events = self._decoder.flush()
        for ev in events:
            self._sink(ev)
        return events

    def ended(self) -> bool:
        ended = getattr(self._decoder, "ended", None)
        return bool(ended()) if ended is not None else False
