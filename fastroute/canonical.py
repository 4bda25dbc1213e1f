"""The canonical model every dialect parses into and renders from.

A request in one dialect becomes a :class:`ChatRequest`; a provider answers
with a :class:`ChatResponse` or a sequence of :class:`StreamEvent`; the
client's dialect renders those back.  Fields a dialect has and the model does
not are kept in ``extra`` so same-dialect traffic loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image, either by URL or inline (base64 ``data`` with its ``media_type``)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    type: Literal["image"] = "image"


@dataclass(slots=True)
class ThinkingPart:
    text: str
    signature: str | None = None
    redacted: bool = False
    type: Literal["thinking"] = "thinking"


ContentPart = TextPart | ImagePart | ThinkingPart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: the arguments as a JSON text, exactly as the model produced them
    arguments: str


@dataclass(slots=True)
class Message:
    role: Role
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: for role "tool": the call this message answers
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: str | None = None
    stream: bool = False
    tools: list[Tool] = field(default_factory=list)
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    #: fields of the client's dialect that the canonical model does not carry
    extra: dict[str, Any] = field(default_factory=dict)

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    #: counted by fastroute because the upstream gave none
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens, "estimated": self.estimated}


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: StopReason = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = 0

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed answer.

    kinds: ``start`` (id, model), ``text`` (text), ``tool_call`` (index, tool_call
    with id/name and the first arguments), ``tool_args`` (index, text), ``stop``
    (stop_reason), ``usage`` (usage), ``error`` (error: a RequestError).
    """

    kind: Literal["start", "text", "tool_call", "tool_args", "stop", "usage", "error"]
    text: str = ""
    index: int = 0
    id: str = ""
    model: str = ""
    tool_call: ToolCall | None = None
    stop_reason: StopReason | None = None
    usage: Usage | None = None
    error: Any = None
