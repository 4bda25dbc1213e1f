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
#: why the model stopped; every dialect maps its own reasons to these and back
StopReason = Literal["stop", "length", "tool_calls", "content_filter", "pause", "error"]


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
    """Model reasoning.  ``signature`` (Anthropic) is kept byte for byte; a
    redacted block carries its opaque ``data`` instead of text."""

    text: str = ""
    signature: str | None = None
    redacted: bool = False
    data: str | None = None
    type: Literal["thinking"] = "thinking"


@dataclass(slots=True)
class DocumentPart:
    """A document (PDF or text), inline base64 ``data`` or by ``url``."""

    data: str | None = None
    media_type: str | None = None
    url: str | None = None
    title: str | None = None
    text: str | None = None
    type: Literal["document"] = "document"


@dataclass(slots=True)
class RawPart:
    """A content block the canonical model does not carry, kept as the client sent it: passed
    on to a provider of that dialect, refused by any other (or, for the record of a hosted tool's
    run, left out with the hosted tools)."""

    dialect: str
    block: dict[str, Any]
    #: it records a hosted tool's call or result (left out, like the hosted tool itself)
    hosted: bool = False
    type: Literal["raw"] = "raw"


ContentPart = TextPart | ImagePart | ThinkingPart | DocumentPart | RawPart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: the arguments as a JSON text, exactly as the model produced them
    arguments: str
    #: the namespace of a namespaced tool (Responses), kept apart from ``name``
    namespace: str | None = None
    #: "custom": a freeform tool (Responses ``custom``) whose input is ``{"input": text}`` here
    kind: Literal["function", "custom"] = "function"


@dataclass(slots=True)
class Message:
    #: "system" here is a system message in the middle of the conversation (leading ones are
    #: ``ChatRequest.system``); it keeps its place
    role: Role
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: for role "tool": the call this message answers, and whether it reports a failure
    tool_call_id: str | None = None
    is_error: bool = False
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    #: the client asked for strict schema adherence (OpenAI ``strict``)
    strict: bool | None = None
    #: the namespace it was declared in (Responses ``namespace`` tools), None for a plain tool
    namespace: str | None = None
    #: "custom": a freeform tool (Responses ``custom``); offered to providers as a function
    #: with one string parameter ``input``
    kind: Literal["function", "custom"] = "function"


#: how a namespaced tool's name is written for a provider that only knows flat function names
NAMESPACE_SEPARATOR = "__"


def wire_name(name: str, namespace: str | None) -> str:
    """The name a provider sees for a tool (or a call of it): flat, namespace first."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def own_call(tools: dict[str, Tool], call: ToolCall) -> None:
    """A provider's call of a flattened tool, given back the client's name, namespace and kind."""
    tool = tools.get(call.name)
    if tool is not None:
        call.name, call.namespace, call.kind = tool.name, tool.namespace, tool.kind


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
    parallel_tool_calls: bool | None = None
    #: a JSON schema the answer must follow: {"name", "schema", "strict"}
    output_schema: dict[str, Any] | None = None
    #: Anthropic's extended thinking config, as given ({"type": "enabled", "budget_tokens": n}, ...)
    thinking: dict[str, Any] | None = None
    #: reasoning effort ("low" | "medium" | "high" | ...)
    effort: str | None = None
    #: Anthropic task budget (sent with the task-budgets beta header)
    task_budget: Any = None
    #: sampling beyond temperature and top_p, for providers that take them
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repeat_penalty: float | None = None
    #: how many answers the client wants (OpenAI ``n``); None: one
    n: int | None = None
    #: any JSON object (OpenAI ``json_object``, Ollama ``format: "json"``), not a schema
    json_mode: bool = False
    #: OpenAI's answer-length hint (``verbosity``, Responses ``text.verbosity``)
    verbosity: str | None = None
    #: OpenAI's prompt-cache routing key
    prompt_cache_key: str | None = None
    #: tools the provider runs itself (web search, code interpreter, MCP servers, ...), as the
    #: client sent them: ``(dialect, type, definition)``; only a provider of that dialect can run them
    hosted_tools: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: the client dialect this request was parsed from
    source: str = ""
    #: what the client dialect's answer says back about the request (Responses: store, previous_response_id)
    echo: dict[str, Any] = field(default_factory=dict)
    #: fields of the client's dialect that the canonical model does not carry: passed on to a
    #: provider of the same dialect, refused by any other (never silently dropped)
    extra: dict[str, Any] = field(default_factory=dict)

    def flat_tool_names(self) -> dict[str, Tool]:
        """Namespaced and custom tools by the flat name providers see (empty when there are none)."""
        return {wire_name(t.name, t.namespace): t for t in self.tools if t.namespace or t.kind == "custom"}

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


@dataclass(slots=True)
class Usage:
    #: all input tokens, cached ones included
    input_tokens: int = 0
    output_tokens: int = 0
    #: input tokens read from the provider's prompt cache
    cached_input_tokens: int = 0
    #: input tokens written to the provider's prompt cache
    cache_creation_tokens: int = 0
    #: output tokens spent on reasoning (a part of output_tokens)
    reasoning_tokens: int = 0
    #: counted by fastroute because the upstream gave none
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens,
                "cache_creation_tokens": self.cache_creation_tokens,
                "reasoning_tokens": self.reasoning_tokens, "estimated": self.estimated}


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: StopReason = "stop"
    #: the stop sequence that ended the answer, when one did
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    created: int = 0

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed answer, the same for every dialect.

    A stream is: ``start``, then any of ``text`` / ``thinking`` / ``signature`` /
    ``redacted_thinking`` / ``tool_call`` / ``tool_args`` in the order the model
    produced them, then ``stop``, then ``usage`` — or an ``error`` anywhere,
    after which nothing follows.

    ======================  ==============================================
    kind                    fields
    ======================  ==============================================
    ``start``               id, model, usage (input counts when known early)
    ``text``                text (a delta)
    ``thinking``            text (a delta of reasoning)
    ``signature``           text (the thinking block's signature, verbatim)
    ``redacted_thinking``   text (the opaque data, verbatim)
    ``tool_call``           index (0, 1, ... per tool call), tool_call (id, name, first arguments)
    ``tool_args``           index, text (a delta of the call's JSON arguments)
    ``stop``                stop_reason, text (the stop sequence, if any)
    ``usage``               usage
    ``error``               error (a RequestError)
    ======================  ==============================================
    """

    kind: Literal["start", "text", "thinking", "signature", "redacted_thinking", "tool_call", "tool_args",
                  "stop", "usage", "error"]
    text: str = ""
    index: int = 0
    id: str = ""
    model: str = ""
    tool_call: ToolCall | None = None
    stop_reason: StopReason | None = None
    usage: Usage | None = None
    error: Any = None
