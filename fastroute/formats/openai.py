"""OpenAI Chat Completions dialect (``POST /v1/chat/completions``).

Parsing validates what fastroute relies on (``model``, ``messages``, ``stream``)
and leaves everything else alone, so the same-dialect fast path forwards the
client's body with only the model name changed.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fastroute._speedups import OPENAI_STOP as _STOP_IN
from fastroute._speedups import OpenAIStreamDecoder as StreamDecoder
from fastroute._speedups import new_id as _new_id
from fastroute._speedups import openai_usage as _parse_usage
from fastroute.canonical import (
    ChatRequest, ChatResponse, DocumentPart, ImagePart, Message, StreamEvent, TextPart, ThinkingPart, Tool,
    ToolCall, Usage, wire_name,
)
from fastroute.formats.framing import sse_boundary
from fastroute.formats.tap import DecoderTap
from fastroute.formats.shape import (
    BOOL, INT, NUM, OBJECT, STR, Arr, Either, Obj, OneOf, ShapeError, Tagged, Text, bad_request,
)
from fastroute.errors import BadRequest, ProviderStatusError, RequestError

NAME = "openai"
STREAM_CONTENT_TYPE = b"text/event-stream"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
STREAM_END = b"\n\n"
stream_boundary = sse_boundary
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
DONE = b"data: [DONE]\n\n"

_MODELLED = frozenset({"model", "messages", "stream", "tools", "tool_choice", "max_tokens",
                       "max_completion_tokens", "temperature", "top_p", "stop", "seed", "parallel_tool_calls",
                       "response_format", "reasoning_effort", "task_budget", "top_k", "min_p", "repetition_penalty",
                       "frequency_penalty", "presence_penalty", "n", "verbosity", "prompt_cache_key"})
#: the optional canonical fields (providers/fit.py OPTIONAL_FIELDS) this format renders
TAKES = frozenset({"top_k", "min_p", "frequency_penalty", "presence_penalty", "repeat_penalty"})
#: fields with no counterpart elsewhere that cannot change the answer: left out when translating
HINTS = frozenset({"stream_options", "user", "metadata", "store", "service_tier", "safety_identifier", "prediction",
                   "prompt_cache_retention"})


# ── requests ───────────────────────────────────────────────────────────────

# the shape of a request: what parse_request reads, checked before anything reads it
_CALL = Obj({"id": STR, "type": STR, "function": Obj({"name": STR, "arguments": STR})})
_PART = Tagged("type", {
    "text": Obj({"text": STR}, required=("text",)),
    "image_url": Obj({"image_url": Obj({"url": STR, "detail": STR}, required=("url",))}, required=("image_url",)),
    "file": Obj({"file": Obj({"file_data": STR, "filename": STR, "file_id": STR})}, required=("file",)),
    "refusal": Obj({"refusal": STR}),
})
_MESSAGE = Obj({"role": OneOf(*sorted(ROLES)), "content": Either(STR, Arr(_PART)), "name": STR,
                "tool_call_id": STR, "tool_calls": Arr(_CALL)}, required=("role",))
_TOOL = Tagged("type", {"function": Obj({"function": Obj({
    "name": STR, "description": STR, "parameters": OBJECT, "strict": BOOL}, required=("name",))},
    required=("function",))}, default="function")
REQUEST = Obj({
    "model": Text(), "messages": Arr(_MESSAGE, min_items=1), "stream": BOOL, "tools": Arr(_TOOL),
    "tool_choice": Either(STR, Obj({"type": STR, "function": Obj({"name": STR})})),
    "max_tokens": INT, "max_completion_tokens": INT, "temperature": NUM, "top_p": NUM, "top_k": INT, "min_p": NUM,
    "repetition_penalty": NUM, "frequency_penalty": NUM, "presence_penalty": NUM, "seed": INT, "n": INT,
    "stop": Either(STR, Arr(STR)), "parallel_tool_calls": BOOL, "reasoning_effort": STR, "verbosity": STR,
    "prompt_cache_key": STR, "stream_options": Obj({"include_usage": BOOL}),
    "response_format": Obj({"type": STR, "json_schema": Obj({"name": STR, "schema": OBJECT, "strict": BOOL})}),
}, required=("model", "messages"))


def check_request(body: Any) -> tuple[str, bool]:
    """Check the body against :data:`REQUEST`; return (model, stream).  Cheap: no copies."""
    try:
        REQUEST.check(body)
    except ShapeError as err:
        raise bad_request(err) from None
    return body["model"], body.get("stream") or False


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """An already-checked body -> ChatRequest."""
    model, stream = check_request(body)
    system_parts: list[str] = []
    messages: list[Message] = []
    for m in body["messages"]:
        role = m["role"]
        parts = _parse_content(m.get("content"))
        if role in ("system", "developer"):
            text = "".join(p.text for p in parts if isinstance(p, TextPart))
            if messages:  # in the middle of the conversation: it keeps its place
                messages.append(Message("system", [TextPart(text)]))
            else:
                system_parts.append(text)
            continue
        if role == "function":
            role = "tool"
        calls = [ToolCall(id=c.get("id") or "", name=(c.get("function") or {}).get("name") or "",
                          arguments=(c.get("function") or {}).get("arguments") or "")
                 for c in m.get("tool_calls") or ()]
        messages.append(Message(role=role, content=parts, tool_calls=calls,
                                tool_call_id=m.get("tool_call_id"), name=m.get("name")))
    tools = [Tool(name=t["function"]["name"], description=t["function"].get("description"),
                  parameters=t["function"].get("parameters"), strict=t["function"].get("strict"))
             for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    stop = body.get("stop")
    schema = None
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        js = fmt["json_schema"]
        schema = {"name": js.get("name") or "output", "schema": js.get("schema") or {}, "strict": js.get("strict")}
    max_tokens = body.get("max_completion_tokens")
    return ChatRequest(
        model=model, messages=messages, system="\n\n".join(system_parts) or None, stream=stream,
        tools=tools, tool_choice=_parse_tool_choice(body.get("tool_choice")),
        max_tokens=body.get("max_tokens") if max_tokens is None else max_tokens,
        temperature=body.get("temperature"), top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or ()), seed=body.get("seed"),
        parallel_tool_calls=body.get("parallel_tool_calls"), output_schema=schema,
        json_mode=isinstance(fmt, dict) and fmt.get("type") == "json_object",
        effort=body.get("reasoning_effort"), task_budget=body.get("task_budget"),
        top_k=body.get("top_k"), min_p=body.get("min_p"), repeat_penalty=body.get("repetition_penalty"),
        frequency_penalty=body.get("frequency_penalty"), presence_penalty=body.get("presence_penalty"),
        n=body.get("n"), verbosity=body.get("verbosity"), prompt_cache_key=body.get("prompt_cache_key"),
        source=NAME, extra={k: v for k, v in body.items() if k not in _MODELLED and k not in HINTS},
    )


def _parse_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"name": name} if name else None
    return choice if choice in ("auto", "none", "required") else None


def _parse_content(content: Any) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Any] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            parts.append(TextPart(p["text"]))
        elif kind == "image_url":
            url = p["image_url"]["url"]
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(ImagePart(data=data, media_type=media_type))
            else:
                parts.append(ImagePart(url=url))
        elif kind == "file":
            f = p.get("file") or {}
            data = f.get("file_data") or ""
            media_type, _, b64 = data[5:].partition(";base64,") if data.startswith("data:") else ("", "", data)
            parts.append(DocumentPart(data=b64 or None, media_type=media_type or "application/pdf",
                                      title=f.get("filename")))
    return parts


def passthrough(body: dict[str, Any], model: str, stream: bool,
                provider: str = "upstream") -> tuple[bytes, StreamTap | None]:
    """The client's body for a same-dialect upstream, and the tap that reads the answer.

    Only the model name changes; for streams fastroute also asks for usage
    (``stream_options.include_usage``) and, if the client did not, hides the
    extra usage chunk from it.
    """
    changes: dict[str, Any] = {} if body["model"] == model else {"model": model}
    if not stream:
        return orjson.dumps({**body, **changes} if changes else body), None
    options = body.get("stream_options")
    hide = not (isinstance(options, dict) and options.get("include_usage"))
    if hide:
        changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps({**body, **changes} if changes else body), StreamTap(hide, provider)


# ── requests to an OpenAI-dialect provider ────────────────────────────────

def check_translatable(request: ChatRequest, provider: str) -> None:
    for m in request.messages:
        for p in m.content:
            if isinstance(p, DocumentPart) and not p.data:
                raise BadRequest(f"provider '{provider}' (OpenAI dialect) cannot take a document by URL; "
                                 "send it inline (base64)")


def _render_parts(parts: list[Any]) -> Any:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            url = p.url if p.url else f"data:{p.media_type or 'image/png'};base64,{p.data}"
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(p, DocumentPart):
            if p.text is not None and not p.data:
                out.append({"type": "text", "text": p.text})
            else:
                out.append({"type": "file", "file": {"filename": p.title or "document.pdf",
                                                     "file_data": f"data:{p.media_type};base64,{p.data}"}})
    return out


#: canonical field -> the name OpenAI-format servers take it by (top_k, min_p and repetition_penalty
#: are the extension vLLM, llama.cpp, LM Studio and Ollama's /v1 accept; api.openai.com refuses them
#: with its own 400, which the client then sees)
_SAMPLING = (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
             ("effort", "reasoning_effort"), ("top_k", "top_k"), ("min_p", "min_p"),
             ("repeat_penalty", "repetition_penalty"), ("frequency_penalty", "frequency_penalty"),
             ("presence_penalty", "presence_penalty"), ("verbosity", "verbosity"),
             ("prompt_cache_key", "prompt_cache_key"))


def _tool_messages(m: Message) -> list[dict[str, Any]]:
    """A tool result; pictures in it (Chat Completions takes none in a tool message) follow
    in a user message, so the model still sees them."""
    text = "".join(p.text for p in m.content if isinstance(p, TextPart))
    pictures = [p for p in m.content if isinstance(p, ImagePart)]
    out = [{"role": "tool", "tool_call_id": m.tool_call_id or "",
            "content": text or ("(the result is the image below)" if pictures else "")}]
    if pictures:
        out.append({"role": "user", "content": [
            {"type": "text", "text": f"Image returned by tool call {m.tool_call_id or ''}:"}, *_render_parts(pictures)]})
    return out


def render_request(req: ChatRequest, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    held: list[dict[str, Any]] = []  # pictures from tool results, sent once the run of tool messages ends
    for m in req.messages:
        if m.role != "tool" and held:
            messages += held
            held = []
        if m.role == "tool":
            tool, *pictures = _tool_messages(m)
            messages.append(tool)
            held += pictures
        elif m.role == "assistant":
            visible = [p for p in m.content if not isinstance(p, ThinkingPart)]
            msg: dict[str, Any] = {"role": "assistant", "content": _render_parts(visible) if visible else None}
            if m.tool_calls:
                msg["tool_calls"] = [_tool_call_dict(c) for c in m.tool_calls]
            messages.append(msg)
        else:
            messages.append({"role": m.role, "content": _render_parts(m.content)})
    messages += held
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": wire_name(t.name, t.namespace), **({"description": t.description} if t.description else {}),
            "parameters": t.parameters or {"type": "object", "properties": {}},
            **({"strict": t.strict} if t.strict is not None else {})}} for t in req.tools]
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = {"type": "function", "function": {"name": tc["name"]}} if isinstance(tc, dict) else tc
    if req.parallel_tool_calls is not None and req.tools:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    for field, key in _SAMPLING:
        value = getattr(req, field)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = req.stop
    if req.output_schema is not None:
        js = {"name": req.output_schema.get("name") or "output", "schema": req.output_schema.get("schema") or {}}
        if req.output_schema.get("strict") is not None:
            js["strict"] = req.output_schema["strict"]
        body["response_format"] = {"type": "json_schema", "json_schema": js}
    elif req.json_mode:
        body["response_format"] = {"type": "json_object"}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if req.source == NAME and req.extra:
        body = {**req.extra, **body}
    return body


#: the shape of a provider's answer, as far as parse_response reads it (counts may come as floats)
_COUNT = NUM
_ANSWER = Obj({
    "id": STR, "model": STR, "created": NUM, "usage": Obj({
        "prompt_tokens": _COUNT, "completion_tokens": _COUNT, "prompt_tokens_details": Obj({"cached_tokens": _COUNT}),
        "completion_tokens_details": Obj({"reasoning_tokens": _COUNT})}),
    "choices": Arr(Obj({"finish_reason": STR, "message": Obj({
        "content": Either(STR, Arr(_PART)), "tool_calls": Arr(_CALL)})})),
})


def parse_response(body: bytes) -> ChatResponse:
    """A provider's chat.completion; raises ValueError (a ShapeError names the path) when it is not one."""
    obj = orjson.loads(body)
    _ANSWER.check(obj)
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[Any] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(ThinkingPart(reasoning))
    text = message.get("content")
    if isinstance(text, list):  # some OpenAI-format servers answer in parts
        text = "".join(p.text for p in _parse_content(text) if isinstance(p, TextPart))
    if text:
        content.append(TextPart(text))
    calls = [ToolCall(id=c.get("id") or _new_id("call_"), name=(c.get("function") or {}).get("name") or "",
                      arguments=(c.get("function") or {}).get("arguments") or "{}")
             for c in message.get("tool_calls") or ()]
    return ChatResponse(id=obj.get("id") or "chatcmpl", model=obj.get("model") or "", content=content,
                        tool_calls=calls, stop_reason=_STOP_IN.get(choice.get("finish_reason") or "stop", "stop"),
                        usage=_parse_usage(obj.get("usage")) or Usage(), created=int(obj.get("created") or 0))


# ── responses ──────────────────────────────────────────────────────────────

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
           "content_filter": "content_filter", "pause": "stop", "error": "stop"}


def _usage_dict(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                           "total_tokens": u.total_tokens}
    if u.cached_input_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_input_tokens}
    if u.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    if u.estimated:
        out["estimated"] = True  # counted by fastroute: the upstream gave no usage
    return out


def _tool_call_dict(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": wire_name(c.name, c.namespace),
                                                         "arguments": c.arguments}}


def render_response(resp: ChatResponse, request: ChatRequest | None = None) -> bytes:
    text = resp.text()
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not resp.tool_calls else None}
    reasoning = "".join(p.text for p in resp.content if isinstance(p, ThinkingPart))
    if reasoning:
        message["reasoning_content"] = reasoning
    if resp.tool_calls:
        message["tool_calls"] = [_tool_call_dict(c) for c in resp.tool_calls]
    return orjson.dumps({
        "id": resp.id, "object": "chat.completion", "created": resp.created or int(time.time()),
        "model": resp.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH.get(resp.stop_reason, "stop")}],
        "usage": _usage_dict(resp.usage),
    })


class StreamRenderer:
    """Canonical stream events -> OpenAI ``chat.completion.chunk`` SSE bytes."""

    def __init__(self, request: ChatRequest | None = None, include_usage: bool = True) -> None:
        self.include_usage = include_usage
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._stop: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, usage: Usage | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if delta is not None else [],
        }
        if usage is not None:
            payload["usage"] = _usage_dict(usage)
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def render(self, ev: StreamEvent) -> bytes:
        kind = ev.kind
        if kind == "text":
            return self._chunk({"content": ev.text})
        if kind == "start":
            self._id, self._model = ev.id, ev.model
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "thinking":
            return self._chunk({"reasoning_content": ev.text})
        if kind == "tool_call":
            c = ev.tool_call
            return self._chunk({"tool_calls": [{"index": ev.index, "id": c.id, "type": "function",
                                                "function": {"name": c.name, "arguments": c.arguments}}]})
        if kind == "tool_args":
            return self._chunk({"tool_calls": [{"index": ev.index, "function": {"arguments": ev.text}}]})
        if kind == "stop":
            return self._chunk({}, finish=_FINISH.get(ev.stop_reason or "stop", "stop"))
        if kind == "usage":
            return self._chunk(None, usage=ev.usage) if self.include_usage else b""  # type: ignore[arg-type]
        if kind == "error":
            return render_stream_error(ev.error)
        return b""

    def end(self) -> bytes:
        return DONE


# ── streamed passthrough, read on the side ─────────────────────────────────

class StreamTap(DecoderTap):
    """Reads an OpenAI SSE stream on the side, after each chunk is forwarded, with the OpenAI
    decoder (text, usage, errors, and at :meth:`finish` a stream cut before its end).

    ``forward`` says what to send the client before that: the chunk itself,
    except that when fastroute asked the upstream for usage on the client's
    behalf (``hide_usage``), the usage-only event the client did not ask for is
    left out.  A substring test keeps that check off every other chunk.
    """

    __slots__ = ("_hide_usage",)

    def __init__(self, hide_usage: bool = False, provider: str = "upstream") -> None:
        super().__init__(StreamDecoder(provider))
        self._hide_usage = hide_usage

    def forward(self, chunk: bytes) -> bytes:
        if not self._hide_usage or b'"usage"' not in chunk:
            return chunk
        # Only the events that mention usage are read (a chunk can hold a whole stream); the rest
        # of the bytes go on exactly as they came.
        at = chunk.find(b'"usage"')
        while at >= 0:
            start = chunk.rfind(b"\n\n", 0, at) + 2 if chunk.rfind(b"\n\n", 0, at) >= 0 else 0
            end = chunk.find(b"\n\n", at)
            end = len(chunk) if end < 0 else end + 2
            if _usage_only(chunk[start:end]):  # the usage event fastroute asked for, not the client
                chunk = chunk[:start] + chunk[end:]
                end = start
            at = chunk.find(b'"usage"', end)
        return chunk


def _usage_only(event: bytes) -> bool:
    data = event[event.find(b"data:") + 5:].strip() if b"data:" in event else b""
    try:
        obj = orjson.loads(data) if data and data != b"[DONE]" else None
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and bool(obj.get("usage")) and not obj.get("choices")


# ── errors ─────────────────────────────────────────────────────────────────

def error_body(err: RequestError) -> bytes:
    if isinstance(err, ProviderStatusError) and err.body_dialect == NAME and _is_openai_error(err.body):
        return err.body  # the provider's own words, untouched
    kind = err.upstream_type if isinstance(err, ProviderStatusError) and err.upstream_type else err.error_type
    return orjson.dumps({"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}})


def render_stream_error(err: RequestError) -> bytes:
    return b"data: " + orjson.dumps({"error": {"message": err.message, "type": err.error_type,
                                               "param": None, "code": err.code}}) + b"\n\n"


#: an error body in OpenAI's own shape (passed to OpenAI clients as it came)
_ERROR = Obj({"error": Obj({"message": Text(), "type": STR, "param": STR, "code": Either(STR, INT)},
                           required=("message",))}, required=("error",))


def _own_error(body: bytes) -> dict[str, Any] | None:
    """The ``error`` object of an error body in OpenAI's shape, else None."""
    try:
        obj = orjson.loads(body)
        _ERROR.check(obj)
    except ValueError:  # not JSON, or not that shape
        return None
    return obj["error"]


def _is_openai_error(body: bytes) -> bool:
    return _own_error(body) is not None


def upstream_error_message(body: bytes) -> tuple[str, str | None]:
    """(message, type) from an OpenAI-style error body, or a short excerpt of it."""
    err = _own_error(body)
    if err is not None:
        return err["message"], err.get("type")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):  # servers that answer {"error": "..."} or {"message": "..."}
        for said in (obj.get("error"), obj.get("message")):
            if isinstance(said, str) and said:
                return said, None
    text = body[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)", None
