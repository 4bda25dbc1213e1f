"""Upstream stream decoding: provider bytes -> canonical stream events, one class per dialect.

The per-chunk hot path of every translated stream.  This file is the Python
implementation; the same source is compiled by Cython (pure-Python mode) as
``_decode_c`` (``_decode_c.py`` is a link to this file), so the two cannot
drift.  Each decoder knows only its own dialect.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from fastroute._speedups._switch import live_sse_decoder
from fastroute.canonical import StreamEvent, ToolCall, Usage
from fastroute.errors import UpstreamError

SSEDecoder = live_sse_decoder()


def new_id(prefix: str) -> str:
    """An id for what an upstream sent without one (an Ollama answer, its tool calls): random,
    so answers made at the same moment, or in the same conversation, never share one."""
    return prefix + os.urandom(12).hex()


# ── OpenAI ─────────────────────────────────────────────────────────────────

class SSEStreamDecoder:
    """What the SSE dialects share: split the bytes into events, hand each event's data on."""

    def __init__(self, provider: str = "upstream") -> None:
        self.provider = provider
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.feed(chunk):
            self._event(ev.data, out)
        return out

    def flush(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for ev in self._sse.flush():
            self._event(ev.data, out)
        return out

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        raise NotImplementedError


OPENAI_STOP = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
            "content_filter": "content_filter"}


def openai_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return Usage(input_tokens=u.get("prompt_tokens") or 0, output_tokens=u.get("completion_tokens") or 0,
                 cached_input_tokens=cached, reasoning_tokens=reasoning)


class OpenAIStreamDecoder(SSEStreamDecoder):
    """OpenAI ``chat.completion.chunk`` SSE bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        super().__init__(provider)
        self._started = False
        self._tools: set[int] = set()
        self.done = False

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error") is not None:
            err = obj["error"]
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            out.append(StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {message}", provider=self.provider)))
            return
        if not self._started:
            self._started = True
            out.append(StreamEvent("start", id=obj.get("id") or "", model=obj.get("model") or ""))
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(StreamEvent("thinking", text=reasoning))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(StreamEvent("text", text=text))
            for tc in delta.get("tool_calls") or ():
                index = tc.get("index", 0)
                fn = tc.get("function") or {}
                if index not in self._tools:
                    self._tools.add(index)
                    out.append(StreamEvent("tool_call", index=index, tool_call=ToolCall(
                        id=tc.get("id") or f"call_{index}", name=fn.get("name") or "",
                        arguments=fn.get("arguments") or "")))
                elif fn.get("arguments"):
                    out.append(StreamEvent("tool_args", index=index, text=fn["arguments"]))
            finish = choice.get("finish_reason")
            if finish:
                out.append(StreamEvent("stop", stop_reason=OPENAI_STOP.get(finish, "stop")))
        usage = openai_usage(obj.get("usage"))
        if usage is not None:
            out.append(StreamEvent("usage", usage=usage))



# ── Anthropic ──────────────────────────────────────────────────────────────

ANTHROPIC_STOP = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop", "tool_use": "tool_calls",
            "refusal": "content_filter", "pause_turn": "pause", "model_context_window_exceeded": "length"}

def anthropic_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    read = u.get("cache_read_input_tokens") or 0
    created = u.get("cache_creation_input_tokens") or 0
    return Usage(input_tokens=(u.get("input_tokens") or 0) + read + created, output_tokens=u.get("output_tokens") or 0,
                 cached_input_tokens=read, cache_creation_tokens=created)


class AnthropicStreamDecoder(SSEStreamDecoder):
    """Anthropic SSE bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        super().__init__(provider)
        self._usage = Usage()
        self._blocks: dict[int, int] = {}  # content block index -> tool call index
        self._tools = 0

    def _event(self, data: bytes, out: list[StreamEvent]) -> None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                out.append(StreamEvent("text", text=delta.get("text", "")))
            elif dtype == "input_json_delta":
                index = self._blocks.get(obj.get("index", 0), 0)
                if delta.get("partial_json"):
                    out.append(StreamEvent("tool_args", index=index, text=delta["partial_json"]))
            elif dtype == "thinking_delta":
                out.append(StreamEvent("thinking", text=delta.get("thinking", "")))
            elif dtype == "signature_delta":
                out.append(StreamEvent("signature", text=delta.get("signature", "")))
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                self._blocks[obj.get("index", 0)] = self._tools
                args = block.get("input")
                out.append(StreamEvent("tool_call", index=self._tools, tool_call=ToolCall(
                    id=block.get("id", ""), name=block.get("name", ""),
                    arguments=orjson.dumps(args).decode() if args else "")))
                self._tools += 1
            elif btype == "text" and block.get("text"):
                out.append(StreamEvent("text", text=block["text"]))
            elif btype == "thinking" and block.get("thinking"):
                out.append(StreamEvent("thinking", text=block["thinking"]))
            elif btype == "redacted_thinking":
                out.append(StreamEvent("redacted_thinking", text=block.get("data", "")))
        elif kind == "message_start":
            message = obj.get("message") or {}
            self._usage = anthropic_usage(message.get("usage")) or Usage()
            out.append(StreamEvent("start", id=message.get("id", ""), model=message.get("model", ""),
                                   usage=self._usage))
        elif kind == "message_delta":
            delta = obj.get("delta") or {}
            u = obj.get("usage") or {}
            if "output_tokens" in u:
                self._usage.output_tokens = u["output_tokens"] or 0
            if u.get("input_tokens") is not None:  # some servers only report input at the end
                later = anthropic_usage(u)
                if later is not None:
                    self._usage.input_tokens = later.input_tokens
                    self._usage.cached_input_tokens = later.cached_input_tokens
                    self._usage.cache_creation_tokens = later.cache_creation_tokens
            if delta.get("stop_reason"):
                out.append(StreamEvent("stop", stop_reason=ANTHROPIC_STOP.get(delta["stop_reason"], "stop"),
                                       text=delta.get("stop_sequence") or ""))
            out.append(StreamEvent("usage", usage=self._usage))
        elif kind == "error":
            err = obj.get("error") or {}
            out.append(StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {err.get('type', 'error')}: {err.get('message', '')}",
                provider=self.provider)))



# ── Ollama ─────────────────────────────────────────────────────────────────

def args_text(args: Any) -> str:
    return args if isinstance(args, str) else orjson.dumps(args if args is not None else {}).decode()


OLLAMA_STOP = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


def ollama_usage(obj: dict[str, Any]) -> Usage:
    return Usage(input_tokens=obj.get("prompt_eval_count") or 0, output_tokens=obj.get("eval_count") or 0)


class OllamaStreamDecoder:
    """Ollama NDJSON bytes -> canonical stream events."""

    def __init__(self, provider: str = "upstream") -> None:
        self.provider = provider
        self._buf = b""
        self._started = False
        self._tools = 0

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        data = self._buf + chunk if self._buf else chunk
        lines = data.split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            if line.strip():
                self._line(line, out)
        return out

    def flush(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._buf.strip():
            self._line(self._buf, out)
        self._buf = b""
        return out

    def _line(self, line: bytes, out: list[StreamEvent]) -> None:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' sent a line that is not JSON", provider=self.provider)))
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            out.append(StreamEvent("error", error=UpstreamError(
                f"provider '{self.provider}' failed mid-stream: {obj['error']}", provider=self.provider)))
            return
        if not self._started:
            self._started = True
            out.append(StreamEvent("start", id=new_id("ollama-"), model=obj.get("model", "")))
        message = obj.get("message") or {}
        if message.get("thinking"):
            out.append(StreamEvent("thinking", text=message["thinking"]))
        if message.get("content"):
            out.append(StreamEvent("text", text=message["content"]))
        for c in message.get("tool_calls") or ():
            fn = c.get("function") or {}
            out.append(StreamEvent("tool_call", index=self._tools, tool_call=ToolCall(
                id=c.get("id") or new_id("call_"), name=fn.get("name", ""),
                arguments=args_text(fn.get("arguments")))))
            self._tools += 1
        if obj.get("done"):
            stop = "tool_calls" if self._tools else OLLAMA_STOP.get(obj.get("done_reason") or "stop", "stop")
            out.append(StreamEvent("stop", stop_reason=stop))
            out.append(StreamEvent("usage", usage=ollama_usage(obj)))

