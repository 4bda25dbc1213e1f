"""Upstream stream decoding: provider bytes -> canonical stream events, one class per dialect.

The per-chunk hot path of every translated stream.  This file is the Python
implementation; the same source is compiled by Cython (pure-Python mode) as
``_decode_c`` (``_decode_c.py`` is a link to this file), so the two cannot
drift.  Each decoder knows only its own dialect.

What a decoder promises, whatever bytes it is fed and however they are split:

- it never raises: an event it cannot read (not JSON, not an object, a field of the wrong
  type: each event is checked against its format's shape, ``_speedups.shape``) ends the
  stream with an ``error`` event (:class:`UpstreamProtocolError`, naming the path when a
  field is wrong), after the good events that came before it in the same read;
- nothing follows an ``error`` (the upstream's own, or one of those), and nothing is read
  after the stream's own end (``[DONE]``, ``message_stop``, ``"done": true``);
- a stream that stops before its answer is complete (no finish reason, no ``message_delta``,
  no ``"done": true``) ends, at ``flush()``, with an ``error``: a cut answer never looks whole;
- what an upstream sent without an id (Ollama's answers, tool calls without one) gets a
  random one (:func:`new_id`), never one that repeats across calls or answers;
- a tool call's arguments are JSON: a call no arguments reached (a tool without parameters,
  as Anthropic streams it: ``input: {}`` and an empty delta) gets ``{}``;
- token counts are whole numbers from 0 to :data:`MAX_COUNT` (``3.0`` is 3; ``-1`` is an error).
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any

import orjson

from fastroute._speedups._switch import NO_EXTENSIONS, live_sse_decoder
from fastroute.canonical import StreamEvent, ToolCall, Usage
from fastroute.errors import UpstreamError, UpstreamProtocolError

SSEDecoder = live_sse_decoder()


def _live_shape() -> Any:
    """The compiled shape walk when built and allowed, else its Python twin (as for SSE)."""
    if not NO_EXTENSIONS:
        try:
            from fastroute._speedups import _shape_c
        except ImportError:
            pass
        else:
            if _shape_c.__file__.endswith(tuple(EXTENSION_SUFFIXES)):
                return _shape_c
    from fastroute._speedups import _shape_py

    return _shape_py


_shape = _live_shape()
_STR = _shape.Types(frozenset({str}), "a string")
_INT = _shape.Types(frozenset({int}), "an integer")
_NUM = _shape.Types(frozenset({int, float}), "a number")  # token counts: some servers send 3.0
_BOOL = _shape.Types(frozenset({bool}), "a boolean")
_OBJECT = _shape.Types(frozenset({dict}), "an object")
#: the largest token count taken (far above any real one; sums of four stay within 64 bits)
MAX_COUNT = 2**53
#: what a decoder turns into an error event instead of raising: whatever reading an odd event
#: can raise (orjson's errors are ValueError and TypeError, a ShapeError is a ValueError)
_UNREADABLE = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def new_id(prefix: str) -> str:
    """An id for what an upstream sent without one (an Ollama answer, a tool call): random,
    so answers made at the same moment, or in the same conversation, never share one."""
    return prefix + os.urandom(12).hex()


def count(value: Any) -> int:
    """A token count as fastroute keeps it: a whole number from 0 to :data:`MAX_COUNT`
    (``None``: 0).  Raises ValueError for anything else (a count of ``"3"``, ``-1``, ``1e300``)."""
    if value is None:
        return 0
    if type(value) is int or type(value) is float:
        if 0 <= value <= MAX_COUNT:
            return int(value)
        raise ValueError(f"a token count of {value!r} is out of range")
    raise ValueError(f"a token count must be a number, got {type(value).__name__}")


def _text(value: Any) -> str:
    return value if type(value) is str else ""


def _unreadable(provider: str, exc: BaseException) -> StreamEvent:
    if isinstance(exc, _shape.ShapeError):
        why = f"{exc.path() or 'the event'}: {exc.describe()}"
    elif isinstance(exc, orjson.JSONDecodeError):
        why = "it is not JSON"
    elif type(exc) is ValueError and str(exc):  # said by this module, in words
        why = str(exc)
    else:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return StreamEvent("error", error=UpstreamProtocolError(
        f"provider '{provider}' sent a stream event fastroute cannot read: {why}", provider=provider))


def _loads_object(data: bytes) -> dict[str, Any]:
    obj = orjson.loads(data)
    if type(obj) is not dict:
        raise _shape.ShapeError("type", "an object", obj)
    return obj


# ── what the SSE dialects share ────────────────────────────────────────────

class SSEStreamDecoder:
    """Split the bytes into SSE events and hand each event's data on; keep the promises above."""

    def __init__(self, provider: str = "upstream") -> None:
        self.provider = provider
        self._sse = SSEDecoder()
        self._failed = False  # an error was emitted: nothing follows
        self._ended = False  # the stream's own end was read: nothing more is read
        self._complete = False  # the answer is whole (its finish reason, or the end, was read)

    def ended(self) -> bool:
        """The stream's own end was read (``[DONE]``, ``message_stop``): what the client got was whole."""
        return self._ended

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not (self._failed or self._ended):
            self._events(self._sse.feed(chunk), out)
        return out

    def flush(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not (self._failed or self._ended):
            self._events(self._sse.flush(), out)
        if not (self._failed or self._complete):
            self._fail(out, StreamEvent("error", error=UpstreamProtocolError(
                f"provider '{self.provider}' ended the stream before its answer was complete",
                provider=self.provider)))
        return out

    def _events(self, events: list, out: list[StreamEvent]) -> None:
        for ev in events:
            data = ev.data
            if not data.strip():  # an event with no data: nothing to read (a keep-alive)
                continue
            kept = len(out)
            try:
                self._event(data, out)
            except _UNREADABLE as exc:
                del out[kept:]  # the odd event gives nothing; the events before it stay
                self._fail(out, _unreadable(self.provider, exc))
            if self._failed or self._ended:
                return

    def _fail(self, out: list[StreamEvent], error: StreamEvent) -> None:
        self._failed = True
        out.append(error)

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        raise NotImplementedError


# ── OpenAI ─────────────────────────────────────────────────────────────────

OPENAI_STOP = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
            "content_filter": "content_filter"}

_OPENAI_USAGE = _shape.Obj({"prompt_tokens": _NUM, "completion_tokens": _NUM,
                            "prompt_tokens_details": _shape.Obj({"cached_tokens": _NUM}),
                            "completion_tokens_details": _shape.Obj({"reasoning_tokens": _NUM})})
#: a chat.completion.chunk, as far as the decoder reads it (null is a field left out)
_OPENAI_CHUNK = _shape.Obj({
    "id": _STR, "model": _STR, "usage": _OPENAI_USAGE,
    "choices": _shape.Arr(_shape.Obj({"finish_reason": _STR, "delta": _shape.Obj({
        "content": _STR, "reasoning_content": _STR, "reasoning": _STR,
        "tool_calls": _shape.Arr(_shape.Obj({"index": _INT, "id": _STR, "function": _shape.Obj({
            "name": _STR, "arguments": _STR})}))})})),
})


def openai_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(input_tokens=count(u.get("prompt_tokens")), output_tokens=count(u.get("completion_tokens")),
                 cached_input_tokens=count(cached), reasoning_tokens=count(reasoning))


class OpenAIStreamDecoder(SSEStreamDecoder):
    """OpenAI ``chat.completion.chunk`` SSE bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        super().__init__(provider)
        self._started = False
        self._tools: set[int] = set()
        self._argless: list[int] = []  # tool calls no arguments reached yet: "{}" at the finish
        self.done = False

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        if data == b"[DONE]":
            self.done = self._ended = self._complete = True
            return
        obj = _loads_object(data)
        if obj.get("error") is not None:
            err = obj["error"]
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            self._fail(out, StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {message}", provider=self.provider)))
            return
        _OPENAI_CHUNK.check(obj)
        if not self._started:
            self._started = True
            out.append(StreamEvent("start", id=_text(obj.get("id")), model=_text(obj.get("model"))))
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                out.append(StreamEvent("thinking", text=reasoning))
            text = delta.get("content")
            if text:
                out.append(StreamEvent("text", text=text))
            for tc in delta.get("tool_calls") or ():
                index = tc.get("index") or 0
                fn = tc.get("function") or {}
                arguments = fn.get("arguments") or ""
                if index not in self._tools:
                    self._tools.add(index)
                    if not arguments:
                        self._argless.append(index)
                    out.append(StreamEvent("tool_call", index=index, tool_call=ToolCall(
                        id=tc.get("id") or new_id("call_"), name=fn.get("name") or "", arguments=arguments)))
                elif arguments:
                    if index in self._argless:
                        self._argless.remove(index)
                    out.append(StreamEvent("tool_args", index=index, text=arguments))
            finish = choice.get("finish_reason")
            if finish:
                self._complete = True
                for index in self._argless:  # a call without arguments takes none: "{}", JSON like any other
                    out.append(StreamEvent("tool_args", index=index, text="{}"))
                self._argless = []
                out.append(StreamEvent("stop", stop_reason=OPENAI_STOP.get(finish, "stop")))
        usage = openai_usage(obj.get("usage"))
        if usage is not None:
            out.append(StreamEvent("usage", usage=usage))


# ── Anthropic ──────────────────────────────────────────────────────────────

ANTHROPIC_STOP = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop", "tool_use": "tool_calls",
            "refusal": "content_filter", "pause_turn": "pause", "model_context_window_exceeded": "length"}

_ANTHROPIC_USAGE = _shape.Obj({"input_tokens": _NUM, "output_tokens": _NUM, "cache_read_input_tokens": _NUM,
                               "cache_creation_input_tokens": _NUM})
#: Anthropic's stream events, as far as the decoder reads them; event types it does not know pass
_ANTHROPIC_EVENT = _shape.Tagged("type", {
    "message_start": _shape.Obj({"message": _shape.Obj({"id": _STR, "model": _STR, "usage": _ANTHROPIC_USAGE})}),
    "content_block_start": _shape.Obj({"index": _INT, "content_block": _shape.Tagged("type", {
        "tool_use": _shape.Obj({"id": _STR, "name": _STR, "input": _OBJECT}),
        "text": _shape.Obj({"text": _STR}), "thinking": _shape.Obj({"thinking": _STR}),
        "redacted_thinking": _shape.Obj({"data": _STR})})}, required=("content_block",)),
    "content_block_delta": _shape.Obj({"index": _INT, "delta": _shape.Tagged("type", {
        "text_delta": _shape.Obj({"text": _STR}), "input_json_delta": _shape.Obj({"partial_json": _STR}),
        "thinking_delta": _shape.Obj({"thinking": _STR}), "signature_delta": _shape.Obj({"signature": _STR})})},
        required=("delta",)),
    "content_block_stop": _shape.Obj({"index": _INT}),
    "message_delta": _shape.Obj({"delta": _shape.Obj({"stop_reason": _STR, "stop_sequence": _STR}),
                                 "usage": _ANTHROPIC_USAGE}),
})


def anthropic_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    read = count(u.get("cache_read_input_tokens"))
    created = count(u.get("cache_creation_input_tokens"))
    return Usage(input_tokens=count(u.get("input_tokens")) + read + created,
                 output_tokens=count(u.get("output_tokens")), cached_input_tokens=read, cache_creation_tokens=created)


class AnthropicStreamDecoder(SSEStreamDecoder):
    """Anthropic SSE bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        super().__init__(provider)
        self._usage = Usage()
        self._blocks: dict[int, int] = {}  # content block index -> tool call index
        self._argless: dict[int, int] = {}  # the same, for tool blocks no arguments reached yet
        self._tools = 0

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        obj = _loads_object(data)
        kind = obj.get("type")
        if kind == "error":
            err = obj.get("error")
            err = err if isinstance(err, dict) else {"message": str(err)}
            self._fail(out, StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {err.get('type', 'error')}: {err.get('message', '')}",
                provider=self.provider)))
            return
        _ANTHROPIC_EVENT.check(obj)
        if kind == "content_block_delta":
            delta = obj["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                out.append(StreamEvent("text", text=_text(delta.get("text"))))
            elif dtype == "input_json_delta":
                block = obj.get("index") or 0
                if block not in self._blocks:
                    raise ValueError(f"input_json_delta for content block {block!r}, which is not a tool_use block")
                if delta.get("partial_json"):
                    self._argless.pop(block, None)
                    out.append(StreamEvent("tool_args", index=self._blocks[block], text=delta["partial_json"]))
            elif dtype == "thinking_delta":
                out.append(StreamEvent("thinking", text=_text(delta.get("thinking"))))
            elif dtype == "signature_delta":
                out.append(StreamEvent("signature", text=_text(delta.get("signature"))))
        elif kind == "content_block_start":
            block = obj["content_block"]
            btype = block.get("type")
            if btype == "tool_use":
                index = obj.get("index") or 0
                self._blocks[index] = self._tools
                args = block.get("input")
                if not args:  # the arguments follow as input_json_delta, or there are none
                    self._argless[index] = self._tools
                out.append(StreamEvent("tool_call", index=self._tools, tool_call=ToolCall(
                    id=block.get("id") or new_id("toolu_"), name=_text(block.get("name")),
                    arguments=orjson.dumps(args).decode() if args else "")))
                self._tools += 1
            elif btype == "text" and block.get("text"):
                out.append(StreamEvent("text", text=block["text"]))
            elif btype == "thinking" and block.get("thinking"):
                out.append(StreamEvent("thinking", text=block["thinking"]))
            elif btype == "redacted_thinking":
                out.append(StreamEvent("redacted_thinking", text=_text(block.get("data"))))
        elif kind == "message_start":
            message = obj.get("message") or {}
            self._usage = anthropic_usage(message.get("usage")) or Usage()
            out.append(StreamEvent("start", id=_text(message.get("id")), model=_text(message.get("model")),
                                   usage=self._usage))
        elif kind == "content_block_stop":
            tool = self._argless.pop(obj.get("index") or 0, None)
            if tool is not None:  # a tool called without arguments takes none: "{}", JSON like any other
                out.append(StreamEvent("tool_args", index=tool, text="{}"))
        elif kind == "message_delta":
            for tool in sorted(self._argless.values()):  # blocks that were never stopped
                out.append(StreamEvent("tool_args", index=tool, text="{}"))
            self._argless.clear()
            delta = obj.get("delta") or {}
            u = obj.get("usage") or {}
            if "output_tokens" in u:
                self._usage.output_tokens = count(u["output_tokens"])
            if u.get("input_tokens") is not None:  # some servers only report input at the end
                later = anthropic_usage(u)
                if later is not None:
                    self._usage.input_tokens = later.input_tokens
                    self._usage.cached_input_tokens = later.cached_input_tokens
                    self._usage.cache_creation_tokens = later.cache_creation_tokens
            self._complete = True
            if delta.get("stop_reason"):
                out.append(StreamEvent("stop", stop_reason=ANTHROPIC_STOP.get(delta["stop_reason"], "stop"),
                                       text=_text(delta.get("stop_sequence"))))
            out.append(StreamEvent("usage", usage=self._usage))
        elif kind == "message_stop":
            self._ended = self._complete = True


# ── Ollama ─────────────────────────────────────────────────────────────────

def args_text(args: Any) -> str:
    """Tool call arguments as JSON text (Ollama sends an object).  Raises ValueError for what
    cannot be written back as JSON (nested deeper than orjson writes)."""
    if isinstance(args, str) and args:
        return args
    try:
        return orjson.dumps({} if args is None or args == "" else args).decode()
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"tool call arguments that cannot be written as JSON: {exc}") from None


OLLAMA_STOP = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}

#: one line of an Ollama chat stream, as far as the decoder reads it
_OLLAMA_LINE = _shape.Obj({
    "model": _STR, "done": _BOOL, "done_reason": _STR, "prompt_eval_count": _NUM, "eval_count": _NUM,
    "message": _shape.Obj({"content": _STR, "thinking": _STR, "tool_calls": _shape.Arr(_shape.Obj({
        "id": _STR, "function": _shape.Obj({"name": _STR, "arguments": _shape.Either(_OBJECT, _STR)})}))}),
})


def ollama_usage(obj: dict[str, Any]) -> Usage:
    return Usage(input_tokens=count(obj.get("prompt_eval_count")), output_tokens=count(obj.get("eval_count")))


class OllamaStreamDecoder:
    """Ollama NDJSON bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        self.provider = provider
        self._buf = b""
        self._started = False
        self._tools = 0
        self._failed = False  # an error was emitted: nothing follows
        self._ended = False  # the "done" line was read: the answer is whole, nothing more is read

    def ended(self) -> bool:
        """The ``"done": true`` line was read: what the client got was whole."""
        return self._ended

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._failed or self._ended:
            return out
        data = self._buf + chunk if self._buf else chunk
        lines = data.split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            if line.strip():
                self._read(line, out)
                if self._failed or self._ended:
                    break
        return out

    def flush(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not (self._failed or self._ended) and self._buf.strip():
            self._read(self._buf, out)
        self._buf = b""
        if not (self._failed or self._ended):
            self._fail(out, StreamEvent("error", error=UpstreamProtocolError(
                f"provider '{self.provider}' ended the stream before its answer was complete",
                provider=self.provider)))
        return out

    def _read(self, line: bytes, out: list[StreamEvent]) -> None:
        kept = len(out)
        try:
            self._line(line, out)
        except _UNREADABLE as exc:
            del out[kept:]  # the odd line gives nothing; the lines before it stay
            if isinstance(exc, orjson.JSONDecodeError):
                error = StreamEvent("error", error=UpstreamProtocolError(
                    f"provider '{self.provider}' sent a line that is not JSON", provider=self.provider))
            else:
                error = _unreadable(self.provider, exc)
            self._fail(out, error)

    def _fail(self, out: list[StreamEvent], error: StreamEvent) -> None:
        self._failed = True
        out.append(error)

    def _line(self, line: bytes, out: list[StreamEvent]) -> None:
        obj = _loads_object(line)
        if obj.get("error"):
            self._fail(out, StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {obj['error']}", provider=self.provider)))
            return
        _OLLAMA_LINE.check(obj)
        if not self._started:
            self._started = True
            out.append(StreamEvent("start", id=new_id("ollama-"), model=_text(obj.get("model"))))
        message = obj.get("message") or {}
        if message.get("thinking"):
            out.append(StreamEvent("thinking", text=message["thinking"]))
        if message.get("content"):
            out.append(StreamEvent("text", text=message["content"]))
        for c in message.get("tool_calls") or ():
            fn = c.get("function") or {}
            out.append(StreamEvent("tool_call", index=self._tools, tool_call=ToolCall(
                id=c.get("id") or new_id("call_"), name=_text(fn.get("name")),
                arguments=args_text(fn.get("arguments")))))
            self._tools += 1
        if obj.get("done"):
            self._ended = True
            stop = "tool_calls" if self._tools else OLLAMA_STOP.get(obj.get("done_reason") or "stop", "stop")
            out.append(StreamEvent("stop", stop_reason=stop))
            out.append(StreamEvent("usage", usage=ollama_usage(obj)))
