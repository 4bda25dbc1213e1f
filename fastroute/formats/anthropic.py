"""Anthropic Messages dialect (``POST /v1/messages``), both ways.

Accepts what real clients (Claude Code and the SDKs) send: ``system`` as a
string or blocks, thinking and redacted-thinking blocks (signatures kept byte
for byte), ``tool_result`` content as a string or blocks, images and documents
as base64 or URL.  Streams are rendered the way the SDK needs them: every
event with its ``event:`` line, ``content: []`` and ``usage`` in
``message_start``, block indexes 0, 1, 2 ... without gaps, ``output_tokens`` in
``message_delta``.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from fastroute._speedups import ANTHROPIC_STOP as _STOP_IN
from fastroute._speedups import AnthropicStreamDecoder as StreamDecoder
from fastroute._speedups import anthropic_usage as _parse_usage
from fastroute.canonical import (
    ChatRequest, ChatResponse, DocumentPart, ImagePart, Message, RawPart, StreamEvent, TextPart, ThinkingPart,
    Tool, ToolCall, Usage, wire_name,
)
from fastroute.errors import BadRequest, ProviderStatusError, RequestError
from fastroute.formats.tap import DecoderTap
from fastroute.formats.framing import sse_boundary
from fastroute.formats.shape import (
    BOOL, INT, NUM, OBJECT, STR, Arr, Either, Obj, OneOf, ShapeError, Tagged, Text,
)

NAME = "anthropic"
STREAM_CONTENT_TYPE = b"text/event-stream"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
STREAM_END = b"\n\n"
stream_boundary = sse_boundary
DEFAULT_MAX_TOKENS = 4096
TASK_BUDGET_BETA = "task-budgets-2026-03-13"

ROLES = frozenset({"user", "assistant", "system"})  # "system": Anthropic's mid-conversation system messages
_MODELLED = frozenset({"model", "messages", "system", "stream", "tools", "tool_choice", "max_tokens", "temperature",
                       "top_p", "top_k", "stop_sequences", "thinking", "output_config", "task_budget", "mcp_servers"})
#: the optional canonical fields (providers/fit.py OPTIONAL_FIELDS) this format renders
TAKES = frozenset({"top_k", "task_budget"})
#: fields with no counterpart elsewhere that cannot change the answer: left out when translating
HINTS = frozenset({"metadata", "context_management", "service_tier", "cache_control", "inference_geo"})
#: server tools Anthropic runs itself (their type carries a version date); left out for other providers
_HOSTED = ("web_search_", "web_fetch_", "code_execution_", "tool_search_tool_")
#: blocks that record a server tool's run (they go where the server tools go)
_HOSTED_BLOCKS = frozenset({"server_tool_use", "mcp_tool_use", "mcp_tool_result"})
MID_CONVERSATION_SYSTEM_BETA = "mid-conversation-system-2026-04-07"
#: efforts of other dialects that Anthropic names otherwise
_EFFORTS = {"minimal": "low", "none": "low", "xhigh": "max"}

_STOP_OUT = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
             "pause": "pause_turn", "error": "end_turn"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 431: "request_too_large",
                504: "timeout_error"}


# ── requests from clients ─────────────────────────────────────────────────

# the shape of a request: what parse_request reads, checked before anything reads it
_SOURCE = Tagged("type", {"url": Obj({"url": STR}, required=("url",)),
                          "base64": Obj({"data": STR, "media_type": STR}, required=("data",)),
                          "text": Obj({"data": STR, "media_type": STR}, required=("data",))})
_TEXT = Obj({"text": STR}, required=("text",))
_BLOCK = Tagged("type", {
    "text": _TEXT,
    "image": Obj({"source": _SOURCE}, required=("source",)),
    "document": Obj({"source": _SOURCE, "title": STR}, required=("source",)),
    "thinking": Obj({"thinking": STR, "signature": STR}),
    "redacted_thinking": Obj({"data": STR}),
    "tool_use": Obj({"id": STR, "name": STR, "input": OBJECT}),
})
_BLOCK.add("tool_result", Obj({"tool_use_id": STR, "content": Either(STR, Arr(_BLOCK)), "is_error": BOOL}))
_MESSAGE = Obj({"role": OneOf("user", "assistant", "system"), "content": Either(STR, Arr(_BLOCK))},
               required=("role", "content"))
REQUEST = Obj({
    "model": Text(), "messages": Arr(_MESSAGE), "system": Either(STR, Arr(Tagged("type", {"text": _TEXT}))),
    "stream": BOOL, "max_tokens": INT, "temperature": NUM, "top_p": NUM, "top_k": INT, "stop_sequences": Arr(STR),
    "tools": Arr(Obj({"type": STR, "name": STR, "description": STR, "input_schema": OBJECT, "strict": BOOL})),
    "tool_choice": Obj({"type": STR, "name": STR, "disable_parallel_tool_use": BOOL}),
    "thinking": Obj({"type": STR, "budget_tokens": INT}), "mcp_servers": Arr(OBJECT), "metadata": OBJECT,
    "output_config": Obj({"format": Obj({"type": STR, "name": STR, "schema": OBJECT}), "effort": STR}),
}, required=("model", "messages"))

#: how Anthropic (pydantic) names what a field should be
_SHOULD = {"a string": "a valid string", "a non-empty string": "a valid string", "an object": "a valid dictionary",
           "an array": "a valid list", "a non-empty array": "a valid list", "an integer": "a valid integer",
           "a number": "a valid number", "a boolean": "a valid boolean"}


def _refusal(err: ShapeError) -> BadRequest:
    """A wrong-shaped body, worded as Anthropic words it (clients match on it)."""
    path = err.path("dots") or "body"
    if err.kind == "missing":
        problem = "Field required"
    elif err.kind == "choice":
        *rest, last = (repr(c) for c in err.choices)
        problem = f"Input should be {', '.join(rest)} or {last}"
    elif err.kind == "tag":
        problem = f"Unable to extract tag using discriminator '{err.expected}'"
    elif err.kind == "empty":
        problem = "String should have at least 1 character" if isinstance(err.got, str) else \
            "List should have at least 1 item after validation, not 0"
    else:
        problem = "Input should be " + " or ".join(_SHOULD.get(e, e) for e in err.expected.split(" or "))
    return BadRequest(f"{path}: {problem}", param=path)


def check_request(body: Any) -> tuple[str, bool]:
    """Check the body against :data:`REQUEST`; return (model, stream)."""
    try:
        REQUEST.check(body)
    except ShapeError as err:
        raise _refusal(err) from None
    return body["model"], body.get("stream") or False


def _source_part(block: dict[str, Any], kind: str) -> Any:
    """An image or document; a source type only Anthropic has (a Files API ``file``, a
    ``content`` document) stays a raw block: an Anthropic provider takes it as it came, any other
    provider refuses it by name (providers/fit.py)."""
    source = block["source"]  # an object with a string type: checked by _SOURCE
    stype = source["type"]
    if kind == "image":
        if stype == "url":
            return ImagePart(url=source["url"])
        if stype == "base64":
            return ImagePart(data=source["data"], media_type=source.get("media_type"))
        return RawPart(NAME, block)
    title = block.get("title")
    if stype == "url":
        return DocumentPart(url=source["url"], title=title)
    if stype == "base64":
        return DocumentPart(data=source["data"], media_type=source.get("media_type"), title=title)
    if stype == "text":
        return DocumentPart(text=source["data"], media_type="text/plain", title=title)
    return RawPart(NAME, block)


def _parse_blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Any] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            parts.append(TextPart(block["text"]))
        elif kind in ("image", "document"):
            parts.append(_source_part(block, kind))
        elif kind == "thinking":
            parts.append(ThinkingPart(block.get("thinking") or "", signature=block.get("signature")))
        elif kind == "redacted_thinking":
            parts.append(ThinkingPart(redacted=True, data=block.get("data")))
        else:  # kept as it came: an Anthropic provider takes it, no other provider drops it silently
            parts.append(RawPart(NAME, block, hosted=isinstance(kind, str) and (
                kind in _HOSTED_BLOCKS or kind.endswith("_tool_result"))))
    return parts


#: Claude Code's per-session billing line at the head of its system prompt: meant for Anthropic's
#: billing, not the model, and different every session (it would defeat a local server's prefix cache)
BILLING_HEADER = "x-anthropic-billing-header:"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text"
                        and not b.get("text", "").startswith(BILLING_HEADER))


def parse_request(body: dict[str, Any]) -> ChatRequest:
    model, stream = check_request(body)
    system = _text_of(body.get("system"))
    messages: list[Message] = []
    for m in body["messages"]:
        content = m["content"]
        role = m["role"]
        if role == "system":  # a system message in the middle of the conversation: it keeps its place
            messages.append(Message("system", [TextPart(_text_of(content))]))
            continue
        if role == "assistant":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            calls = [ToolCall(id=b.get("id") or "", name=b.get("name") or "",
                              arguments=orjson.dumps(b.get("input") or {}).decode())
                     for b in blocks if b.get("type") == "tool_use"]
            messages.append(Message("assistant", _parse_blocks([b for b in blocks if b.get("type") != "tool_use"]),
                                    tool_calls=calls))
            continue
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            rest: list[dict[str, Any]] = []
            for b in content:
                if b.get("type") == "tool_result":
                    messages.append(Message("tool", _parse_blocks(b.get("content") or ""),
                                            tool_call_id=b.get("tool_use_id"), is_error=bool(b.get("is_error"))))
                else:
                    rest.append(b)
            if rest:
                messages.append(Message("user", _parse_blocks(rest)))
            continue
        messages.append(Message("user", _parse_blocks(content)))
    tools: list[Tool] = []
    hosted: list[tuple[str, str, dict[str, Any]]] = []
    for i, t in enumerate(body.get("tools") or ()):
        kind = t.get("type") if isinstance(t, dict) else type(t).__name__
        if not isinstance(t, dict) or kind not in (None, "custom"):
            if isinstance(kind, str) and kind.startswith(_HOSTED):
                hosted.append((NAME, kind, t))
                continue
            raise BadRequest(f"tools.{i}: Anthropic-defined tool {kind!r} can only be served by an Anthropic provider",
                             param=f"tools.{i}")
        tools.append(Tool(name=t.get("name") or "", description=t.get("description"), parameters=t.get("input_schema"),
                          strict=t.get("strict")))
    hosted += [(NAME, "mcp_servers", server) for server in body.get("mcp_servers") or ()]
    choice, parallel = _parse_tool_choice(body.get("tool_choice"))
    config = body.get("output_config") or {}
    fmt = config.get("format")
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}, "strict": True}
    thinking = body.get("thinking")
    return ChatRequest(
        model=model, messages=messages, system=system or None, stream=stream, tools=tools, tool_choice=choice,
        parallel_tool_calls=parallel, max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
        top_p=body.get("top_p"), top_k=body.get("top_k"), stop=list(body.get("stop_sequences") or ()),
        output_schema=schema, thinking=thinking if isinstance(thinking, dict) else None, effort=config.get("effort"),
        task_budget=config.get("task_budget") or body.get("task_budget"), hosted_tools=hosted, source=NAME,
        extra={k: v for k, v in body.items() if k not in _MODELLED and k not in HINTS},
    )


def _parse_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "tool":
        return {"name": choice.get("name") or ""}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}.get(kind), parallel


def passthrough(body: dict[str, Any], model: str, stream: bool,
                provider: str = "upstream") -> tuple[bytes, DecoderTap | None]:
    """The client's body for an Anthropic upstream (only the model changes), and the tap for the answer."""
    return orjson.dumps({**body, "model": model} if body["model"] != model else body), \
        (DecoderTap(StreamDecoder(provider)) if stream else None)


# ── requests to an Anthropic provider ────────────────────────────────────

def check_translatable(request: ChatRequest, provider: str) -> None:
    if request.json_mode:
        raise BadRequest(f"provider '{provider}' (Anthropic format) has no plain JSON mode; "
                         "ask for a JSON schema instead (response_format json_schema / text.format json_schema)",
                         param="response_format")


def _render_part(p: Any) -> dict[str, Any] | None:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text} if p.text else None
    if isinstance(p, ImagePart):
        source = {"type": "url", "url": p.url} if p.url else {"type": "base64", "media_type": p.media_type or "image/png",
                                                             "data": p.data}
        return {"type": "image", "source": source}
    if isinstance(p, DocumentPart):
        if p.url:
            source: dict[str, Any] = {"type": "url", "url": p.url}
        elif p.data:
            source = {"type": "base64", "media_type": p.media_type or "application/pdf", "data": p.data}
        else:
            source = {"type": "text", "media_type": "text/plain", "data": p.text or ""}
        return {"type": "document", "source": source, **({"title": p.title} if p.title else {})}
    if isinstance(p, ThinkingPart):
        if p.redacted:
            return {"type": "redacted_thinking", "data": p.data or ""}
        block = {"type": "thinking", "thinking": p.text}
        if p.signature is not None:
            block["signature"] = p.signature
        return block
    if isinstance(p, RawPart) and p.dialect == NAME:
        return p.block
    return None


def _system_reminder(text: str) -> dict[str, Any]:
    """A system message from the middle of another dialect's conversation, where Anthropic has none:
    in the user's turn, wrapped the way Claude Code itself falls back to."""
    return {"type": "text", "text": f"<system-reminder>\n{text}\n</system-reminder>"}


def render_request(req: ChatRequest, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    own = req.source == NAME  # the client spoke this dialect: what it sent keeps its form

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic wants user and assistant to alternate
            merged = messages[-1]["content"] + blocks
            # tool results lead their user turn (Anthropic refuses text before them)
            merged.sort(key=lambda b: b.get("type") != "tool_result")
            messages[-1]["content"] = merged
        else:
            messages.append({"role": role, "content": blocks})

    for m in req.messages:
        if m.role == "system":
            if own:
                messages.append({"role": "system", "content": m.text()})
            else:
                add("user", [_system_reminder(m.text())])
        elif m.role == "tool":
            inner = [b for b in (_render_part(p) for p in m.content) if b]
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": inner}
            if m.is_error:
                result["is_error"] = True
            add("user", [result])
        elif m.role == "assistant":
            blocks = [b for b in (_render_part(p) for p in m.content) if b]
            blocks += [_tool_use_block(c) for c in m.tool_calls]
            add("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            blocks = [b for b in (_render_part(p) for p in m.content) if b]
            add("user", blocks or [{"type": "text", "text": ""}])
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": messages}
    if req.system:
        body["system"] = req.system
    tools = [{"name": wire_name(t.name, t.namespace), **({"description": t.description} if t.description else {}),
              "input_schema": t.parameters or {"type": "object", "properties": {}},
              **({"strict": t.strict} if t.strict is not None else {})} for t in req.tools]
    tools += [d for dialect, _, d in req.hosted_tools if dialect == NAME and "type" in d]
    if tools:
        body["tools"] = tools
    servers = [d for dialect, kind, d in req.hosted_tools if dialect == NAME and kind == "mcp_servers"]
    if servers:
        body["mcp_servers"] = servers
    tc = req.tool_choice
    choice: dict[str, Any] | None = None
    if isinstance(tc, dict):
        choice = {"type": "tool", "name": tc["name"]}
    elif tc in ("auto", "required", "none"):
        choice = {"type": {"auto": "auto", "required": "any", "none": "none"}[tc]}
    if req.parallel_tool_calls is False and req.tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        body["tool_choice"] = choice
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p), ("top_k", req.top_k),
                       ("thinking", req.thinking)):
        if value is not None:
            body[key] = value
    if req.thinking is None and req.effort is not None:
        body["thinking"] = {"type": "adaptive"}  # an effort from another dialect asks for reasoning
    if req.stop:
        body["stop_sequences"] = req.stop
    config: dict[str, Any] = {}
    if req.effort is not None:
        config["effort"] = _EFFORTS.get(req.effort, req.effort)
    if req.output_schema is not None:
        config["format"] = {"type": "json_schema", "schema": req.output_schema.get("schema") or {}}
    if req.task_budget is not None:
        config["task_budget"] = req.task_budget
    if config:
        body["output_config"] = config
    if stream:
        body["stream"] = True
    if own and req.extra:
        body = {**req.extra, **body}
    return body


#: the shape of a provider's answer, as far as parse_response reads it (counts may come as floats)
_ANSWER = Obj({"id": STR, "model": STR, "content": Arr(_BLOCK), "stop_reason": STR, "stop_sequence": STR,
               "usage": Obj({key: NUM for key in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                  "cache_creation_input_tokens")})})


def parse_response(body: bytes) -> ChatResponse:
    """A provider's message; raises ValueError (a ShapeError names the path) when it is not one."""
    obj = orjson.loads(body)
    _ANSWER.check(obj)
    content: list[Any] = []
    calls: list[ToolCall] = []
    for block in obj.get("content") or ():
        if block["type"] == "tool_use":
            calls.append(ToolCall(id=block.get("id") or "", name=block.get("name") or "",
                                  arguments=orjson.dumps(block.get("input") or {}).decode()))
        else:
            content.extend(_parse_blocks([block]))
    return ChatResponse(id=obj.get("id") or "msg", model=obj.get("model") or "", content=content, tool_calls=calls,
                        stop_reason=_STOP_IN.get(obj.get("stop_reason") or "end_turn", "stop"),
                        stop_sequence=obj.get("stop_sequence"), usage=_parse_usage(obj.get("usage")) or Usage())


# ── answers to clients ────────────────────────────────────────────────────

def _usage_dict(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": max(0, u.input_tokens - u.cached_input_tokens - u.cache_creation_tokens),
        "output_tokens": u.output_tokens, "cache_read_input_tokens": u.cached_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens}
    if u.estimated:
        out["estimated"] = True  # counted by fastroute: the upstream gave no usage
    return out


def _message_id(raw: str) -> str:
    return raw if raw.startswith("msg_") else "msg_" + (raw or os.urandom(12).hex())


def _tool_use_block(c: ToolCall) -> dict[str, Any]:
    try:
        args = orjson.loads(c.arguments) if c.arguments else {}
    except orjson.JSONDecodeError:
        args = {"_raw_arguments": c.arguments}
    return {"type": "tool_use", "id": c.id, "name": wire_name(c.name, c.namespace), "input": args}


def render_response(resp: ChatResponse, request: ChatRequest | None = None) -> bytes:
    content = [b for b in (_render_part(p) for p in resp.content) if b]
    content += [_tool_use_block(c) for c in resp.tool_calls]
    return orjson.dumps({
        "id": _message_id(resp.id), "type": "message", "role": "assistant", "model": resp.model,
        "content": content, "stop_reason": _STOP_OUT.get(resp.stop_reason, "end_turn"),
        "stop_sequence": resp.stop_sequence, "usage": _usage_dict(resp.usage),
    })


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamRenderer:
    """Canonical events -> Anthropic SSE, block by block, indexes without gaps."""

    def __init__(self, request: ChatRequest | None = None) -> None:
        self._index = -1  # the open content block, -1: none
        self._open: str | None = None  # its type
        self._tool_block: dict[int, int] = {}
        self._stop = "end_turn"
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None
        self._started = False
        self._model = ""

    def _start(self, id: str = "", model: str = "", usage: Usage | None = None) -> bytes:
        self._started = True
        return _sse("message_start", {"type": "message_start", "message": {
            "id": _message_id(id), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": _usage_dict(usage) if usage else {"input_tokens": 0, "output_tokens": 0}}})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + _sse("content_block_start", {"type": "content_block_start", "index": self._index,
                                                   "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def render(self, ev: StreamEvent) -> bytes:
        kind = ev.kind
        out = b"" if self._started or kind in ("start", "error") else self._start()
        if kind == "text":
            if self._open != "text":
                out += self._begin("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": ev.text})
        if kind == "start":
            self._model = ev.model
            return self._start(ev.id, ev.model, ev.usage) + _sse("ping", {"type": "ping"})
        if kind == "thinking":
            if self._open != "thinking":
                out += self._begin("thinking", {"type": "thinking", "thinking": ""})
            return out + self._delta({"type": "thinking_delta", "thinking": ev.text})
        if kind == "signature":
            if self._open != "thinking":
                out += self._begin("thinking", {"type": "thinking", "thinking": ""})
            return out + self._delta({"type": "signature_delta", "signature": ev.text})
        if kind == "redacted_thinking":
            out += self._begin("redacted_thinking", {"type": "redacted_thinking", "data": ev.text})
            return out + self._close()
        if kind == "tool_call":
            c = ev.tool_call
            out += self._begin("tool_use", {"type": "tool_use", "id": c.id, "name": c.name, "input": {}})
            self._tool_block[ev.index] = self._index
            if c.arguments:
                out += self._delta({"type": "input_json_delta", "partial_json": c.arguments})
            return out
        if kind == "tool_args":
            if self._open == "tool_use" and self._tool_block.get(ev.index) == self._index:
                return out + self._delta({"type": "input_json_delta", "partial_json": ev.text})
            return out  # a delta for a block already closed cannot be sent in this dialect
        if kind == "stop":
            self._stop = _STOP_OUT.get(ev.stop_reason or "stop", "end_turn")
            self._stop_sequence = ev.text or None
            return out
        if kind == "usage":
            self._usage = ev.usage
            return out
        if kind == "error":
            return out + render_stream_error(ev.error)
        return out

    def end(self) -> bytes:
        out = b"" if self._started else self._start()
        out += self._close()
        usage = _usage_dict(self._usage) if self._usage else {"output_tokens": 0}
        out += _sse("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": self._stop, "stop_sequence": self._stop_sequence},
                                      "usage": usage})
        return out + _sse("message_stop", {"type": "message_stop"})


# ── passthrough, read on the side ─────────────────────────────────────────

# ── errors ────────────────────────────────────────────────────────────────

def _error_type(err: RequestError) -> str:
    if isinstance(err, ProviderStatusError) and err.upstream_type:
        return err.upstream_type
    return _ERROR_TYPES.get(err.http_status, "api_error")


def error_body(err: RequestError) -> bytes:
    if isinstance(err, ProviderStatusError) and err.body_dialect == NAME and _is_anthropic_error(err.body):
        return err.body
    return orjson.dumps({"type": "error", "error": {"type": _error_type(err), "message": err.message}})


def render_stream_error(err: RequestError) -> bytes:
    return _sse("error", {"type": "error", "error": {"type": _error_type(err), "message": err.message}})


#: an error body in Anthropic's own shape (passed to Anthropic clients as it came)
_ERROR = Obj({"type": OneOf("error"), "error": Obj({"type": Text(), "message": Text()},
                                                   required=("type", "message"))}, required=("type", "error"))


def _own_error(body: bytes) -> dict[str, Any] | None:
    """The ``error`` object of an error body in Anthropic's shape, else None."""
    try:
        obj = orjson.loads(body)
        _ERROR.check(obj)
    except ValueError:  # not JSON, or not that shape
        return None
    return obj["error"]


def _is_anthropic_error(body: bytes) -> bool:
    return _own_error(body) is not None


def upstream_error_message(body: bytes) -> tuple[str, str | None]:
    err = _own_error(body)
    if err is not None:
        return err["message"], err["type"]
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    said = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(said, dict) and isinstance(said.get("message"), str) and said["message"]:
        return said["message"], said.get("type") if isinstance(said.get("type"), str) else None
    text = body[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)", None
