"""What the exact cache keeps of an answer, and how a streamed answer is assembled to be kept.

An entry is the canonical answer (:class:`~fastroute.canonical.ChatResponse`), which every client
dialect renders, streamed or not, plus, for an answer that came through the same-dialect fast
path, the upstream's own bytes: served as they are to a client of that dialect asking without a
stream, so nothing the canonical model does not carry (``logprobs``, ``system_fingerprint``, ...)
is lost.  On the wire: 4 bytes of the canonical part's length, the canonical part (orjson), the
raw bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from fastroute.canonical import (
    ChatResponse, DocumentPart, ImagePart, RawPart, StreamEvent, TextPart, ThinkingPart, ToolCall, Usage,
)

VERSION = 1
_PARTS = {"text": TextPart, "image": ImagePart, "thinking": ThinkingPart, "document": DocumentPart, "raw": RawPart}
#: stop reasons of an answer that is not whole: never kept
UNFINISHED = frozenset({"error", "pause"})


@dataclass(slots=True)
class Entry:
    response: ChatResponse
    #: the upstream's body, in ``raw_dialect`` (fast path, not streamed), or None
    raw: bytes | None = None
    raw_dialect: str | None = None


def encode(entry: Entry) -> bytes:
    meta = orjson.dumps({"v": VERSION, "dialect": entry.raw_dialect, "response": entry.response})
    return len(meta).to_bytes(4, "big") + meta + (entry.raw or b"")


def decode(value: bytes) -> Entry | None:
    """The entry, or None for bytes that are not one (another version, damaged): a miss."""
    try:
        size = int.from_bytes(value[:4], "big")
        meta = orjson.loads(value[4:4 + size])
        if meta.get("v") != VERSION:
            return None
        r = meta["response"]
        response = ChatResponse(
            id=r["id"], model=r["model"], content=[_PARTS[p["type"]](**p) for p in r["content"]],
            tool_calls=[ToolCall(**c) for c in r["tool_calls"]], stop_reason=r["stop_reason"],
            stop_sequence=r["stop_sequence"], usage=Usage(**r["usage"]), created=r["created"])
        raw = value[4 + size:]
        return Entry(response, raw or None, meta.get("dialect") if raw else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def keepable(response: ChatResponse) -> bool:
    """A whole answer that a stream can replay: finished, and only text, reasoning and tool calls."""
    return response.stop_reason not in UNFINISHED and all(
        isinstance(p, (TextPart, ThinkingPart)) for p in response.content)


def events_of(response: ChatResponse) -> Iterator[StreamEvent]:
    """A kept answer as the stream events any dialect's ``StreamRenderer`` renders."""
    yield StreamEvent("start", id=response.id, model=response.model)
    for part in response.content:
        if isinstance(part, TextPart):
            if part.text:
                yield StreamEvent("text", text=part.text)
        elif isinstance(part, ThinkingPart):
            if part.redacted:
                yield StreamEvent("redacted_thinking", text=part.data or "")
                continue
            yield StreamEvent("thinking", text=part.text)
            if part.signature is not None:
                yield StreamEvent("signature", text=part.signature)
    for i, call in enumerate(response.tool_calls):
        yield StreamEvent("tool_call", index=i, tool_call=call)
    yield StreamEvent("stop", stop_reason=response.stop_reason, text=response.stop_sequence or "")
    yield StreamEvent("usage", usage=response.usage)


class Collector:
    """Assembles a streamed answer from its events (:meth:`add`, in the stream's order); :meth:`response`
    is the whole answer once the stream stopped cleanly, else None."""

    __slots__ = ("id", "model", "parts", "calls", "stop_reason", "stop_sequence", "usage", "failed")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.parts: list[Any] = []
        self.calls: dict[int, ToolCall] = {}
        self.stop_reason: Any = None
        self.stop_sequence: str | None = None
        self.usage: Usage | None = None
        self.failed = False

    def add(self, ev: StreamEvent) -> None:
        kind = ev.kind
        parts = self.parts
        if kind == "text":
            if parts and type(parts[-1]) is TextPart:
                parts[-1].text += ev.text
            else:
                parts.append(TextPart(ev.text))
        elif kind == "thinking":
            last = parts[-1] if parts else None
            if type(last) is ThinkingPart and not last.redacted and last.signature is None:
                last.text += ev.text
            else:
                parts.append(ThinkingPart(ev.text))
        elif kind == "signature":
            last = parts[-1] if parts else None
            if type(last) is ThinkingPart and not last.redacted:
                last.signature = (last.signature or "") + ev.text
            else:
                parts.append(ThinkingPart("", signature=ev.text))
        elif kind == "redacted_thinking":
            parts.append(ThinkingPart(redacted=True, data=ev.text))
        elif kind == "tool_call":
            c = ev.tool_call
            if c is not None:
                self.calls[ev.index] = ToolCall(c.id, c.name, c.arguments, c.namespace, c.kind)
        elif kind == "tool_args":
            call = self.calls.get(ev.index)
            if call is None:
                self.failed = True
            else:
                call.arguments += ev.text
        elif kind == "stop":
            self.stop_reason = ev.stop_reason or "stop"
            self.stop_sequence = ev.text or None
        elif kind == "usage":
            self.usage = ev.usage
        elif kind == "start":
            self.id, self.model = ev.id or self.id, ev.model or self.model
            if ev.usage is not None and self.usage is None:
                self.usage = ev.usage
        elif kind == "error":
            self.failed = True

    def response(self, usage: Usage | None = None) -> ChatResponse | None:
        if self.failed or self.stop_reason is None:
            return None
        return ChatResponse(id=self.id, model=self.model, content=self.parts,
                            tool_calls=[self.calls[i] for i in sorted(self.calls)], stop_reason=self.stop_reason,
                            stop_sequence=self.stop_sequence, usage=usage or self.usage or Usage())
