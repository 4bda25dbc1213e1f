"""Ollama's native dialect (``POST /api/chat``), both ways.

Streams are NDJSON: one JSON object a line, no blank lines, streaming on by
default; tool calls travel whole (arguments as objects), so a streamed tool
call is sent as one line once its arguments are complete.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fastroute.canonical import (
    ChatRequest, ChatResponse, DocumentPart, ImagePart, Message, StreamEvent, TextPart, ThinkingPart, Tool,
    ToolCall, Usage, wire_name,
)
from fastroute.errors import BadRequest, ProviderStatusError, RequestError
from fastroute._speedups import OLLAMA_STOP as _STOP_IN
from fastroute._speedups import OllamaStreamDecoder as StreamDecoder
from fastroute._speedups import args_text as _args_text
from fastroute._speedups import new_id as _new_id
from fastroute._speedups import ollama_usage as _usage
from fastroute.formats.tap import DecoderTap
from fastroute.formats.framing import ndjson_boundary
from fastroute.formats.shape import (
    BOOL, INT, NUM, OBJECT, STR, Arr, Either, Obj, OneOf, ShapeError, Text, bad_request,
)

NAME = "ollama"
STREAM_CONTENT_TYPE = b"application/x-ndjson"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
STREAM_END = b"\n"
stream_boundary = ndjson_boundary
VERSION = "0.12.0"  # what /api/version reports: new enough for clients' feature checks

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_MODELLED = frozenset({"model", "messages", "stream", "tools", "options", "format", "think"})
#: the optional canonical fields (providers/fit.py OPTIONAL_FIELDS) this format renders
TAKES = frozenset({"top_k", "min_p", "frequency_penalty", "presence_penalty", "repeat_penalty"})
#: fields with no counterpart elsewhere that cannot change the answer: left out when translating
HINTS = frozenset({"keep_alive"})
#: Ollama option -> canonical field
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
            "num_predict": "max_tokens", "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty"}
#: options that size the runtime (memory, threads, context window), not the answer: left out when translating
_RUNTIME_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock",
                              "low_vram", "numa", "num_keep", "vocab_only"})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


# ── requests from clients ─────────────────────────────────────────────────

# the shape of a request: what parse_request reads, checked before anything reads it
_CALL = Obj({"id": STR, "function": Obj({"name": STR, "arguments": Either(OBJECT, STR)})})
_MESSAGE = Obj({"role": OneOf("system", "user", "assistant", "tool"), "content": STR, "images": Arr(STR),
                "thinking": STR, "tool_calls": Arr(_CALL), "tool_name": STR, "tool_call_id": STR, "name": STR},
               required=("role",))
REQUEST = Obj({
    "model": Text(), "messages": Arr(_MESSAGE, min_items=1), "stream": BOOL, "format": Either(STR, OBJECT),
    "think": Either(BOOL, STR), "keep_alive": Either(STR, NUM),
    "tools": Arr(Obj({"type": STR, "function": Obj({"name": STR, "description": STR, "parameters": OBJECT},
                                                   required=("name",))})),
    "options": Obj({**{key: NUM for key in ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty",
                                            "frequency_penalty")},
                    **{key: INT for key in ("top_k", "seed", "num_predict", "num_ctx", "num_batch", "num_gpu",
                                            "main_gpu", "num_thread", "num_keep")},
                    "stop": Either(STR, Arr(STR))}),
}, required=("model", "messages"))


def check_request(body: Any) -> tuple[str, bool]:
    """Check the body against :data:`REQUEST`; return (model, stream) (Ollama streams by default)."""
    try:
        REQUEST.check(body)
    except ShapeError as err:
        raise bad_request(err) from None
    stream = body.get("stream")
    return body["model"], True if stream is None else stream


def parse_request(body: dict[str, Any]) -> ChatRequest:
    model, stream = check_request(body)
    system: list[str] = []
    messages: list[Message] = []
    last_calls: dict[str, str] = {}  # tool name -> id of its latest call, to pair tool results
    for i, m in enumerate(body["messages"]):
        role = m["role"]
        content = m.get("content") or ""
        if role == "system":
            if messages:  # in the middle of the conversation: it keeps its place
                messages.append(Message("system", [TextPart(content)]))
            else:
                system.append(content)
            continue
        parts: list[Any] = []
        if m.get("thinking"):
            parts.append(ThinkingPart(m["thinking"]))
        if content:
            parts.append(TextPart(content))
        parts += [ImagePart(data=img, media_type="image/png") for img in m.get("images") or ()]
        calls = []
        for j, c in enumerate(m.get("tool_calls") or ()):
            fn = c.get("function") or {}
            call = ToolCall(id=c.get("id") or f"call_{i}_{j}", name=fn.get("name") or "",
                            arguments=_args_text(fn.get("arguments")))
            last_calls[call.name] = call.id
            calls.append(call)
        tool_id = None
        if role == "tool":
            name = m.get("tool_name") or m.get("name")
            tool_id = m.get("tool_call_id") or last_calls.get(name or "") or (calls[-1].id if calls else None)
            if tool_id is None and last_calls:
                tool_id = list(last_calls.values())[-1]
        messages.append(Message(role, parts, tool_calls=calls, tool_call_id=tool_id, name=m.get("tool_name")))
    options = body.get("options") or {}
    kwargs = {field: options[key] for key, field in _OPTIONS.items() if options.get(key) is not None}
    stop = options.get("stop")
    extra = {k: v for k, v in body.items() if k not in _MODELLED and k not in HINTS}
    unmapped = {k: v for k, v in options.items() if k not in _OPTIONS and k != "stop" and k not in _RUNTIME_OPTIONS}
    if unmapped:  # sampling options no other dialect has: passed to Ollama, refused elsewhere
        extra["options"] = unmapped
    fmt = body.get("format")
    schema = {"name": "output", "schema": fmt, "strict": True} if isinstance(fmt, dict) else None
    think = body.get("think")
    thinking = {"type": "adaptive"} if think is True or isinstance(think, str) else (
        {"type": "disabled"} if think is False else None)
    tools = [Tool(name=t["function"]["name"], description=t["function"].get("description"),
                  parameters=t["function"].get("parameters"))
             for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    return ChatRequest(
        model=model, messages=messages, system="\n\n".join(system) or None, stream=stream, tools=tools,
        stop=[stop] if isinstance(stop, str) else list(stop or ()), output_schema=schema, json_mode=fmt == "json",
        thinking=thinking, effort=think if isinstance(think, str) else None, source=NAME, extra=extra, **kwargs,
    )


def passthrough(body: dict[str, Any], model: str, stream: bool,
                provider: str = "upstream") -> tuple[bytes, DecoderTap | None]:
    """The client's body with the model changed and ``stream`` explicit (Ollama streams by default)."""
    return orjson.dumps({**body, "model": model, "stream": stream}), \
        (DecoderTap(StreamDecoder(provider)) if stream else None)


# ── requests to an Ollama provider ───────────────────────────────────────

def check_translatable(request: ChatRequest, provider: str) -> None:
    for m in request.messages:
        for p in m.content:
            if isinstance(p, ImagePart) and not p.data:
                raise BadRequest(f"provider '{provider}' (Ollama) takes images only inline (base64), "
                                 f"not by URL: {p.url}")
            if isinstance(p, DocumentPart):
                raise BadRequest(f"provider '{provider}' (Ollama) cannot take documents")


def render_request(req: ChatRequest, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    names = {c.id: wire_name(c.name, c.namespace) for m in req.messages for c in m.tool_calls}
    for m in req.messages:
        out: dict[str, Any] = {"role": m.role, "content": "".join(p.text for p in m.content if isinstance(p, TextPart))}
        images = [p.data for p in m.content if isinstance(p, ImagePart) and p.data]
        if images:
            out["images"] = images
        thinking = "".join(p.text for p in m.content if isinstance(p, ThinkingPart) and not p.redacted)
        if thinking:
            out["thinking"] = thinking
        if m.tool_calls:
            out["tool_calls"] = [{"function": {"name": wire_name(c.name, c.namespace),
                                               "arguments": _loads_args(c.arguments)}} for c in m.tool_calls]
        if m.role == "tool" and m.tool_call_id in names:
            out["tool_name"] = names[m.tool_call_id]
        messages.append(out)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": stream}
    if req.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": wire_name(t.name, t.namespace), **({"description": t.description} if t.description else {}),
            "parameters": t.parameters or {"type": "object", "properties": {}}}} for t in req.tools]
    options: dict[str, Any] = {}
    for key, field in _OPTIONS.items():
        value = getattr(req, field)
        if value is not None:
            options[key] = value
    if req.stop:
        options["stop"] = req.stop
    own = req.source == NAME
    if own and isinstance(req.extra.get("options"), dict):
        options.update(req.extra["options"])
    if options:
        body["options"] = options
    if req.output_schema is not None:
        body["format"] = req.output_schema.get("schema") or {"type": "object"}
    elif req.json_mode:
        body["format"] = "json"
    think = _think(req)
    if think is not None:
        body["think"] = think
    if own:
        body = {**{k: v for k, v in req.extra.items() if k != "options"}, **body}
    return body


def _think(req: ChatRequest) -> bool | str | None:
    """Ollama's ``think``: a level where one was asked for and the model takes levels (gpt-oss; others
    answer 400 'think value "high" is not supported for this model'), else on or off."""
    if req.effort in ("low", "medium", "high") and "gpt-oss" in req.model:
        return req.effort
    kind = req.thinking.get("type") if isinstance(req.thinking, dict) else None
    if kind == "disabled":
        return False
    if kind is not None or req.effort is not None:
        return True
    return None


def _loads_args(arguments: str) -> Any:
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}


#: the shape of a provider's answer, as far as parse_response reads it
_ANSWER = Obj({"model": STR, "done_reason": STR, "prompt_eval_count": NUM, "eval_count": NUM,
               "message": Obj({"content": STR, "thinking": STR, "tool_calls": Arr(_CALL)})})


def parse_response(body: bytes) -> ChatResponse:
    """A provider's /api/chat answer; raises ValueError (a ShapeError names the path) when it is not one."""
    obj = orjson.loads(body)
    _ANSWER.check(obj)
    message = obj.get("message") or {}
    content: list[Any] = []
    if message.get("thinking"):
        content.append(ThinkingPart(message["thinking"]))
    if message.get("content"):
        content.append(TextPart(message["content"]))
    calls = [ToolCall(id=c.get("id") or _new_id("call_"), name=(c.get("function") or {}).get("name") or "",
                      arguments=_args_text((c.get("function") or {}).get("arguments")))
             for c in message.get("tool_calls") or ()]
    stop = "tool_calls" if calls else _STOP_IN.get(obj.get("done_reason") or "stop", "stop")
    return ChatResponse(id=_new_id("ollama-"), model=obj.get("model") or "",
                        content=content, tool_calls=calls, stop_reason=stop, usage=_usage(obj))


# ── answers to clients ────────────────────────────────────────────────────

_DONE = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop", "pause": "stop",
         "error": "stop"}


def _final_fields(usage: Usage | None, stop: str, elapsed_ns: int) -> dict[str, Any]:
    u = usage or Usage()
    return {"done": True, "done_reason": _DONE.get(stop, "stop"), "total_duration": elapsed_ns, "load_duration": 0,
            "prompt_eval_count": u.input_tokens, "prompt_eval_duration": 0, "eval_count": u.output_tokens,
            "eval_duration": elapsed_ns}


def render_response(resp: ChatResponse, request: ChatRequest | None = None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": resp.text()}
    thinking = "".join(p.text for p in resp.content if isinstance(p, ThinkingPart))
    if thinking:
        message["thinking"] = thinking
    if resp.tool_calls:
        message["tool_calls"] = [{"function": {"name": c.name, "arguments": _loads_args(c.arguments)}}
                                 for c in resp.tool_calls]
    return orjson.dumps({"model": resp.model, "created_at": _now(), "message": message,
                         **_final_fields(resp.usage, resp.stop_reason, 0)})


class StreamRenderer:
    """Canonical events -> strict NDJSON; a tool call goes out whole once its arguments are complete."""

    def __init__(self, request: ChatRequest | None = None) -> None:
        self._model = ""
        self._started = time.perf_counter_ns()
        self._calls: list[ToolCall] = []
        self._stop = "stop"
        self._usage: Usage | None = None

    def _line(self, message: dict[str, Any]) -> bytes:
        return orjson.dumps({"model": self._model, "created_at": _now(), "message": message, "done": False}) + b"\n"

    def _flush_calls(self) -> bytes:
        if not self._calls:
            return b""
        calls, self._calls = self._calls, []
        return self._line({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": c.name, "arguments": _loads_args(c.arguments)}} for c in calls]})

    def render(self, ev: StreamEvent) -> bytes:
        kind = ev.kind
        if kind == "text":
            return self._flush_calls() + self._line({"role": "assistant", "content": ev.text})
        if kind == "thinking":
            return self._line({"role": "assistant", "content": "", "thinking": ev.text})
        if kind == "start":
            self._model = ev.model
            return b""
        if kind == "tool_call":
            c = ev.tool_call
            self._calls.append(ToolCall(c.id, c.name, c.arguments))
            return b""
        if kind == "tool_args":
            if self._calls:
                self._calls[-1].arguments += ev.text
            return b""
        if kind == "stop":
            self._stop = ev.stop_reason or "stop"
            return self._flush_calls()
        if kind == "usage":
            self._usage = ev.usage
            return b""
        if kind == "error":
            return self._flush_calls() + render_stream_error(ev.error)
        return b""

    def end(self) -> bytes:
        elapsed = time.perf_counter_ns() - self._started
        return self._flush_calls() + orjson.dumps({
            "model": self._model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
            **_final_fields(self._usage, self._stop, elapsed)}) + b"\n"


# ── passthrough, read on the side ─────────────────────────────────────────

# ── errors ────────────────────────────────────────────────────────────────

def error_body(err: RequestError) -> bytes:
    if isinstance(err, ProviderStatusError) and err.body_dialect == NAME and _is_ollama_error(err.body):
        return err.body
    return orjson.dumps({"error": err.message})


def render_stream_error(err: RequestError) -> bytes:
    return orjson.dumps({"error": err.message}) + b"\n"


#: an error body in Ollama's own shape (passed to Ollama clients as it came)
_ERROR = Obj({"error": Text()}, required=("error",))


def _own_error(body: bytes) -> str | None:
    """The message of an error body in Ollama's shape, else None."""
    try:
        obj = orjson.loads(body)
        _ERROR.check(obj)
    except ValueError:  # not JSON, or not that shape
        return None
    return obj["error"]


def _is_ollama_error(body: bytes) -> bool:
    return _own_error(body) is not None


def upstream_error_message(body: bytes) -> tuple[str, str | None]:
    said = _own_error(body)
    if said is not None:
        return said, None
    text = body[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)", None
