"""OpenAI Responses dialect (``POST /v1/responses``), for clients.

``input`` as a string or items (``message``, ``function_call``,
``function_call_output``, ``reasoning``), ``instructions``, function tools,
``max_output_tokens``, ``text.format``.  fastroute keeps no conversation state,
so ``previous_response_id`` and item references are refused with a clear 400
instead of being dropped.  Streams follow the order the SDK's helper needs:
``response.created`` first, ``output_item.added`` and ``content_part.added``
before text deltas, and the full output in ``response.completed``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from fastroute.canonical import (
    ChatRequest, ChatResponse, DocumentPart, ImagePart, Message, StreamEvent, TextPart, ThinkingPart, Tool,
    ToolCall, Usage,
)
from fastroute.errors import BadRequest, ProviderStatusError, RequestError
from fastroute.formats.framing import sse_boundary
from fastroute.formats.shape import (
    BOOL, INT, NUM, OBJECT, STR, Arr, Either, Obj, ShapeError, Tagged, Text, bad_request,
)

NAME = "responses"
STREAM_CONTENT_TYPE = b"text/event-stream"
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
STREAM_END = b"\n\n"
stream_boundary = sse_boundary

_MODELLED = frozenset({"model", "input", "instructions", "stream", "tools", "tool_choice", "max_output_tokens",
                       "temperature", "top_p", "text", "reasoning", "parallel_tool_calls", "prompt_cache_key",
                       "previous_response_id"})
#: fields with no counterpart elsewhere that cannot change the answer: left out when translating.
#: (``include: ["reasoning.encrypted_content"]`` is answered with what the provider gives: a
#: thinking signature where it has one, nothing where it has none)
HINTS = frozenset({"store", "include", "metadata", "user", "safety_identifier", "service_tier", "truncation",
                   "client_metadata", "stream_options", "prompt_cache_retention"})
#: tools OpenAI runs itself: left out for every provider fastroute reaches (none runs them), and named
#: in the answer's ``x-router-omitted-tools`` header
HOSTED_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
                          "code_interpreter", "image_generation", "computer_use_preview", "computer", "mcp",
                          "tool_search"})
#: input items that record a hosted tool's run: they go where the hosted tools go
_HOSTED_ITEMS = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
                           "computer_call", "computer_call_output", "mcp_call", "mcp_list_tools",
                           "mcp_approval_request", "mcp_approval_response", "tool_search_call",
                           "tool_search_output"})
#: the parameters a freeform (``custom``) tool is offered with to providers that only take functions
CUSTOM_PARAMETERS = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
                     "additionalProperties": False}
_UNSERVABLE = {
    "conversation": "fastroute keeps no conversations: send the whole conversation in 'input'",
    "prompt": "stored prompts are not available through fastroute",
    "background": "background responses are not available through fastroute",
}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


# ── requests ───────────────────────────────────────────────────────────────

# the shape of a request: what parse_request reads, checked before anything reads it
_PART = Tagged("type", {
    **{kind: Obj({"text": STR}, required=("text",)) for kind in ("input_text", "output_text", "text")},
    "refusal": Obj({"refusal": STR}, required=("refusal",)),
    "input_image": Obj({"image_url": STR, "file_id": STR, "detail": STR}),
    "input_file": Obj({"file_data": STR, "file_url": STR, "filename": STR, "file_id": STR}),
})
_CONTENT = Either(STR, Arr(_PART))
_ITEM = Tagged("type", {
    "message": Obj({"role": STR, "content": _CONTENT}, required=("role", "content")),
    "function_call": Obj({"call_id": STR, "id": STR, "name": STR, "arguments": STR, "namespace": STR}),
    "custom_tool_call": Obj({"call_id": STR, "id": STR, "name": STR, "input": STR, "namespace": STR}),
    "function_call_output": Obj({"call_id": STR, "output": _CONTENT}),
    "custom_tool_call_output": Obj({"call_id": STR, "output": _CONTENT}),
    "reasoning": Obj({"summary": Arr(Obj({"text": STR})), "encrypted_content": STR}),
    "item_reference": Obj({"id": Text()}, required=("id",)),
}, default="message")
_FUNCTION = Obj({"name": STR, "description": STR, "parameters": OBJECT, "strict": BOOL})
_TOOL = Tagged("type", {"function": _FUNCTION, "custom": Obj({"name": STR, "description": STR}),
                        "namespace": Obj({"name": STR, "tools": Arr(Tagged("type", {
                            "function": _FUNCTION, "custom": Obj({"name": STR, "description": STR})}))})})
REQUEST = Obj({
    "model": Text(), "input": Either(Text(), Arr(_ITEM, min_items=1)), "instructions": STR, "stream": BOOL,
    "tools": Arr(_TOOL), "tool_choice": Either(STR, Obj({"type": STR, "name": STR})), "max_output_tokens": INT,
    "temperature": NUM, "top_p": NUM, "parallel_tool_calls": BOOL, "prompt_cache_key": STR,
    "previous_response_id": STR, "store": BOOL, "include": Arr(STR),
    "text": Obj({"format": Obj({"type": STR, "name": STR, "schema": OBJECT, "strict": BOOL}), "verbosity": STR}),
    "reasoning": Obj({"effort": STR, "summary": STR}),
}, required=("model", "input"))


def check_request(body: Any) -> tuple[str, bool]:
    """Check the body against :data:`REQUEST`; return (model, stream)."""
    try:
        REQUEST.check(body)
    except ShapeError as err:
        raise bad_request(err) from None
    for key, why in _UNSERVABLE.items():
        if body.get(key) not in (None, False):
            raise BadRequest(f"'{key}' is not supported: {why}", param=key)
    return body["model"], body.get("stream") or False


def _parts(content: Any, where: str) -> list[Any]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be a string or an array of parts", param=f"{where}.content")
    parts: list[Any] = []
    for j, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(p["text"]))
        elif kind == "refusal":
            parts.append(TextPart(p["refusal"]))
        elif kind == "input_image":
            url = p.get("image_url") or ""
            if not url:
                raise BadRequest(f"'{where}.content[{j}]': images by file_id are not supported; use image_url")
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(ImagePart(data=data, media_type=media_type))
            else:
                parts.append(ImagePart(url=url))
        elif kind == "input_file":
            data = p.get("file_data") or ""
            if data.startswith("data:"):
                media_type, _, data = data[5:].partition(";base64,")
            else:
                media_type = "application/pdf"
            if not data and not p.get("file_url"):
                raise BadRequest(f"'{where}.content[{j}]': files by file_id are not supported; use file_data")
            parts.append(DocumentPart(data=data or None, media_type=media_type, url=p.get("file_url"),
                                      title=p.get("filename")))
        else:
            raise BadRequest(f"'{where}.content[{j}]': content part type {kind!r} is not supported")
    return parts


def _custom_input(call: ToolCall) -> str:
    """The freeform input of a custom tool call, from its canonical ``{"input": text}`` arguments."""
    try:
        args = orjson.loads(call.arguments) if call.arguments else {}
    except orjson.JSONDecodeError:
        return call.arguments
    return args.get("input", "") if isinstance(args, dict) and isinstance(args.get("input"), str) else call.arguments


def _assistant(messages: list[Message]) -> Message:
    """The assistant turn an output item belongs to: the last one, unless something came after it."""
    if messages and messages[-1].role == "assistant":
        return messages[-1]
    messages.append(Message("assistant", []))
    return messages[-1]


def parse_request(body: dict[str, Any]) -> ChatRequest:
    model, stream = check_request(body)
    system: list[str] = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    messages: list[Message] = []
    hosted: list[tuple[str, str, dict[str, Any]]] = []
    inp = body["input"]
    items = [{"role": "user", "content": inp}] if isinstance(inp, str) else inp
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                text = "".join(p.text for p in _parts(item.get("content"), where) if isinstance(p, TextPart))
                if messages:  # in the middle of the conversation: it keeps its place
                    messages.append(Message("system", [TextPart(text)]))
                else:
                    system.append(text)
            elif role in ("user", "assistant"):
                parts = _parts(item.get("content"), where)
                if role == "assistant" and messages and messages[-1].role == "assistant" and not messages[-1].tool_calls:
                    messages[-1].content.extend(parts)
                else:
                    messages.append(Message(role, parts))
            else:
                raise BadRequest(f"'{where}.role' must be user, assistant, system or developer", param=where)
        elif kind in ("function_call", "custom_tool_call"):
            custom = kind == "custom_tool_call"
            arguments = orjson.dumps({"input": item.get("input") or ""}).decode() if custom else (
                item.get("arguments") or "{}")
            _assistant(messages).tool_calls.append(ToolCall(
                id=item.get("call_id") or item.get("id") or "", name=item.get("name") or "", arguments=arguments,
                namespace=item.get("namespace"), kind="custom" if custom else "function"))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            parts = _parts(output, where) if isinstance(output, list) else [TextPart(str(output or ""))]
            messages.append(Message("tool", parts, tool_call_id=item.get("call_id")))
        elif kind == "reasoning":
            text = "".join(s.get("text") or "" for s in item.get("summary") or () if isinstance(s, dict))
            part = ThinkingPart(text, signature=item.get("encrypted_content"))
            turn = _assistant(messages)
            if turn.tool_calls:  # reasoning opens a new step of the assistant's turn
                messages.append(Message("assistant", [part]))
            else:
                turn.content.insert(0, part)
        elif kind in _HOSTED_ITEMS:
            hosted.append((NAME, kind, item))
        elif kind == "item_reference":  # resolved from the store before parsing, when it is on
            raise BadRequest(f"'{where}': item_reference {item.get('id')!r} cannot be resolved: the Responses "
                             "store is off ([responses] store = false); send the item itself", param=where)
        else:
            raise BadRequest(f"'{where}': input item type {kind!r} is not supported by fastroute", param=where)
    tools: list[Tool] = []
    for i, t in enumerate(body.get("tools") or ()):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "namespace":
            for j, inner in enumerate(t.get("tools") or ()):
                tools.append(_tool(inner, f"tools[{i}].tools[{j}]", t.get("name") or None))
        elif kind in HOSTED_TOOLS:
            hosted.append((NAME, kind, t))
        else:
            tools.append(_tool(t, f"tools[{i}]", None))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"name": choice.get("name") or ""} if choice.get("type") in ("function", "custom") else None
    elif choice not in ("auto", "none", "required"):
        choice = None
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    fmt = text.get("format")
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name") or "output", "schema": fmt.get("schema") or {}, "strict": fmt.get("strict")}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return ChatRequest(
        model=model, messages=messages, system="\n\n".join(s for s in system if s) or None, stream=stream,
        tools=tools, tool_choice=choice, max_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"), top_p=body.get("top_p"),
        parallel_tool_calls=body.get("parallel_tool_calls"), output_schema=schema,
        json_mode=isinstance(fmt, dict) and fmt.get("type") == "json_object", effort=reasoning.get("effort"),
        verbosity=text.get("verbosity"), prompt_cache_key=body.get("prompt_cache_key"), hosted_tools=hosted,
        source=NAME, echo={"store": body.get("store", True) is not False,
                           "previous_response_id": body.get("previous_response_id")}, extra={k: v for k, v in body.items() if k not in _MODELLED and k not in HINTS},
    )


def _tool(t: Any, where: str, namespace: str | None) -> Tool:
    """A function or custom tool (inside a namespace or not)."""
    kind = t.get("type") if isinstance(t, dict) else None
    if kind == "function":
        return Tool(name=t.get("name") or "", description=t.get("description"), parameters=t.get("parameters"),
                    strict=t.get("strict"), namespace=namespace)
    if kind == "custom":
        return Tool(name=t.get("name") or "", description=t.get("description"), parameters=CUSTOM_PARAMETERS,
                    namespace=namespace, kind="custom")
    raise BadRequest(f"'{where}': tool type {kind!r} is not supported by fastroute "
                     f"(function, custom, namespace and the hosted tools are)", param=where)


# ── answers ────────────────────────────────────────────────────────────────

def _usage_dict(u: Usage | None) -> dict[str, Any]:
    u = u or Usage()
    out = {"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
           "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
           "total_tokens": u.total_tokens}
    if u.estimated:
        out["estimated"] = True
    return out


def _response(id: str, model: str, status: str, output: list[dict[str, Any]], usage: Usage | None,
              created: int, stop: str | None = None, error: dict[str, Any] | None = None,
              echo: dict[str, Any] | None = None) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if stop == "length" else None
    if incomplete and status == "completed":
        status = "incomplete"
    return {"id": id, "object": "response", "created_at": created, "status": status, "error": error,
            "incomplete_details": incomplete, "model": model, "output": output, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "store": bool((echo or {}).get("store")),
            "previous_response_id": (echo or {}).get("previous_response_id"), "text": {"format": {"type": "text"}},
            "truncation": "disabled", "metadata": {}, "usage": _usage_dict(usage) if usage else None}


def _message_item(id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(id: str, c: ToolCall, status: str = "completed") -> dict[str, Any]:
    if c.kind == "custom":
        item = {"type": "custom_tool_call", "id": id, "call_id": c.id, "name": c.name, "input": _custom_input(c),
                "status": status}
    else:
        item = {"type": "function_call", "id": id, "call_id": c.id, "name": c.name, "arguments": c.arguments,
                "status": status}
    if c.namespace:
        item["namespace"] = c.namespace
    return item


def _reasoning_item(id: str, text: str, signature: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]}
    if signature:
        item["encrypted_content"] = signature
    return item


def render_response(resp: ChatResponse, request: ChatRequest | None = None) -> bytes:
    output: list[dict[str, Any]] = []
    thinking = [p for p in resp.content if isinstance(p, ThinkingPart) and not p.redacted]
    if thinking:
        output.append(_reasoning_item(_new_id("rs"), "".join(p.text for p in thinking), thinking[-1].signature))
    text = resp.text()
    if text or not resp.tool_calls:
        output.append(_message_item(_new_id("msg"), text))
    output += [_call_item(_new_id("fc"), c) for c in resp.tool_calls]
    return orjson.dumps(_response(_new_id("resp"), resp.model, "completed", output, resp.usage,
                                  resp.created or int(time.time()), resp.stop_reason,
                                  echo=request.echo if request is not None else None))


class StreamRenderer:
    """Canonical events -> Responses SSE events, numbered, with the full output at the end."""

    def __init__(self, request: ChatRequest | None = None) -> None:
        self._echo = request.echo if request is not None else None
        #: the response object of ``response.completed`` / ``.incomplete``, once the stream has ended
        self.final: dict[str, Any] | None = None
        self._seq = 0
        self._id = _new_id("resp")
        self._model = ""
        self._created = int(time.time())
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the output item being streamed
        self._text: list[str] = []
        self._calls: dict[int, int] = {}  # tool call index -> output index
        self._stop: str | None = None
        self._usage: Usage | None = None
        self._started = False

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> bytes:
        self._started = True
        snapshot = _response(self._id, self._model, "in_progress", [], None, self._created, echo=self._echo)
        return (self._event("response.created", {"response": snapshot})
                + self._event("response.in_progress", {"response": snapshot}))

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        index = len(self._output)
        out = b""
        if item["type"] == "message":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += self._event("response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                             "content_index": 0, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                              "content_index": 0, "part": part})
            item = _message_item(item["id"], text)
        elif item["type"] == "reasoning":
            text = "".join(self._text)
            out += self._event("response.reasoning_summary_text.done", {
                "item_id": item["id"], "output_index": index, "summary_index": 0, "text": text})
            out += self._event("response.reasoning_summary_part.done", {
                "item_id": item["id"], "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": text}})
            item = _reasoning_item(item["id"], text, item.get("encrypted_content"))
        elif item["type"] == "function_call":
            item["status"] = "completed"
            out += self._event("response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": index, "name": item["name"], "arguments": item["arguments"]})
        elif item["type"] == "custom_tool_call":
            # the provider streamed {"input": ...} as function arguments: the freeform input, whole
            item = _call_item(item["id"], ToolCall(item["call_id"], item["name"], "".join(self._text),
                                                   item.get("namespace"), "custom"))
            out += self._event("response.custom_tool_call_input.delta", {
                "item_id": item["id"], "output_index": index, "delta": item["input"]})
            out += self._event("response.custom_tool_call_input.done", {
                "item_id": item["id"], "output_index": index, "input": item["input"]})
        self._text = []
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _open_item(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = item
        index = len(self._output)
        out += self._event("response.output_item.added", {"output_index": index, "item": item})
        if item["type"] == "message":
            out += self._event("response.content_part.added", {
                "item_id": item["id"], "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        elif item["type"] == "reasoning":
            out += self._event("response.reasoning_summary_part.added", {
                "item_id": item["id"], "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}})
        return out

    def render(self, ev: StreamEvent) -> bytes:
        kind = ev.kind
        if kind == "start":
            self._model = ev.model
            return self._start()
        out = b"" if self._started else self._start()
        index = len(self._output)
        if kind == "text":
            if self._open is None or self._open["type"] != "message":
                out += self._open_item({"type": "message", "id": _new_id("msg"), "status": "in_progress",
                                        "role": "assistant", "content": []})
            self._text.append(ev.text)
            return out + self._event("response.output_text.delta", {
                "item_id": self._open["id"], "output_index": index, "content_index": 0, "delta": ev.text,
                "logprobs": []})
        if kind in ("thinking", "signature"):
            if self._open is None or self._open["type"] != "reasoning":
                out += self._open_item({"type": "reasoning", "id": _new_id("rs"), "summary": []})
            if kind == "signature":
                self._open["encrypted_content"] = self._open.get("encrypted_content", "") + ev.text
                return out
            self._text.append(ev.text)
            return out + self._event("response.reasoning_summary_text.delta", {
                "item_id": self._open["id"], "output_index": index, "summary_index": 0, "delta": ev.text})
        if kind == "tool_call":
            c = ev.tool_call
            item = _call_item(_new_id("ctc" if c.kind == "custom" else "fc"), ToolCall(c.id, c.name, "", c.namespace,
                                                                                     c.kind), "in_progress")
            out += self._open_item(item)
            self._calls[ev.index] = len(self._output)
            if c.arguments:
                out += self._args(c.arguments)
            return out
        if kind == "tool_args":
            if self._open is not None and self._open["type"] in ("function_call", "custom_tool_call") \
                    and self._calls.get(ev.index) == len(self._output):
                out += self._args(ev.text)
            return out
        if kind == "stop":
            self._stop = ev.stop_reason
            return out
        if kind == "usage":
            self._usage = ev.usage
            return out
        if kind == "error":
            return out + self._failed(ev.error)
        return out

    def _args(self, delta: str) -> bytes:
        assert self._open is not None
        if self._open["type"] == "custom_tool_call":  # JSON of {"input": ...} until the call is complete
            self._text.append(delta)
            return b""
        self._open["arguments"] += delta
        return self._event("response.function_call_arguments.delta", {
            "item_id": self._open["id"], "output_index": len(self._output), "delta": delta})

    def _failed(self, err: RequestError) -> bytes:
        error = {"code": err.error_type, "message": err.message}
        return self._event("response.failed", {"response": _response(
            self._id, self._model, "failed", self._output, self._usage, self._created, error=error, echo=self._echo)})

    def end(self) -> bytes:
        out = b"" if self._started else self._start()
        out += self._close()
        final = _response(self._id, self._model, "completed", self._output, self._usage, self._created, self._stop,
                          echo=self._echo)
        self.final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, {"response": final})


# ── errors ─────────────────────────────────────────────────────────────────

def error_body(err: RequestError) -> bytes:
    kind = err.upstream_type if isinstance(err, ProviderStatusError) and err.upstream_type else err.error_type
    return orjson.dumps({"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}})


def render_stream_error(err: RequestError) -> bytes:
    return StreamRenderer()._failed(err)
