"""The stub upstream's Anthropic and Ollama dialects, and the tool-calling brain all three share.

The brain: a request whose conversation ends in a tool result gets the text
``tool said: <result>``; a request that offers tools gets a call of the first
tool with ``{"city": "Paris"}``; anything else gets ``stub: <last user text>``.
The model ``stub-talk-then-tool`` (also behind a routing prefix) writes ``PREAMBLE``
before that tool call, in the same answer, as models often do.
Anthropic requests with ``thinking`` enabled also get a thinking block whose
signature (``SIGNATURE``) must come back byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

SIGNATURE = "EqQBCkYIARgCKkD+/sig==\\u2603+tail"
TOOL_ARGS = {"city": "Paris"}
TALK_THEN_TOOL = "stub-talk-then-tool"
PREAMBLE = "Let me check that for you."


def plan(last_user: str, tools: list[str], tool_result: str | None) -> tuple[str, str | None]:
    """(text, name of the tool to call or None)."""
    if tool_result is not None:
        return f"tool said: {tool_result}", None
    if tools:
        return "", tools[0]
    return f"stub: {last_user}", None


def talk_then_tool(model: str, text: str, tool: str | None) -> str:
    """The text of an answer from ``plan``: ``PREAMBLE`` beside a tool call of ``stub-talk-then-tool``."""
    return PREAMBLE if tool and behaviour(model) == TALK_THEN_TOOL else text


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


# ── Anthropic ──────────────────────────────────────────────────────────────

def anthropic_plan(body: dict[str, Any]) -> tuple[str, str | None]:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tool_result = None
    last_user = ""
    if isinstance(last.get("content"), list):
        for block in last["content"]:
            if block.get("type") == "tool_result":
                tool_result = _text_of(block.get("content"))
    for m in reversed(messages):
        if m.get("role") == "user":
            last_user = _text_of(m.get("content"))
            break
    return plan(last_user, [t.get("name", "") for t in body.get("tools") or []], tool_result)


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}))


def behaviour(model: str) -> str:
    """Tests reach each stub dialect through a routing prefix ("a/", "o/"): the part after it."""
    return model.rpartition("/")[2]


async def anthropic_messages(stub: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    model = behaviour(body.get("model", ""))
    if model == "stub-error-500":
        return _anthropic_error(500, "api_error", "the stub's engine exploded")
    if model == "stub-context":
        return _anthropic_error(400, "invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum")
    text, tool = anthropic_plan(body)
    text = talk_then_tool(model, text, tool)
    thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
    blocks: list[dict[str, Any]] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": "Let me think.", "signature": SIGNATURE})
    if text:
        blocks.append({"type": "text", "text": text})
    if tool:
        blocks.append({"type": "tool_use", "id": "toolu_stub1", "name": tool, "input": TOOL_ARGS})
    usage = {"input_tokens": 7, "output_tokens": 4, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0}
    stop = "tool_use" if tool else "end_turn"
    if not body.get("stream"):
        return web.json_response({"id": "msg_stub1", "type": "message", "role": "assistant", "model": model,
                                  "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage},
                                 dumps=lambda o: orjson.dumps(o).decode())
    resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
    await resp.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await resp.write(b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    await send("message_start", {"type": "message_start", "message": {
        "id": "msg_stub1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})
    await send("ping", {"type": "ping"})
    for i, block in enumerate(blocks):
        if block["type"] == "thinking":
            await send("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "thinking", "thinking": ""}})
            await send("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            await send("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "signature_delta", "signature": SIGNATURE}})
        elif block["type"] == "text":
            await send("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}})
            for j, word in enumerate(block["text"].split(" ")):
                await send("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": word if j == 0 else " " + word}})
            if model == "stub-cut":
                request.transport.abort()  # type: ignore[union-attr]
                return resp
        else:
            await send("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            raw = orjson.dumps(block["input"]).decode()
            for piece in (raw[:5], raw[5:]):
                await send("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "input_json_delta", "partial_json": piece}})
        await send("content_block_stop", {"type": "content_block_stop", "index": i})
    await send("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": 4}})
    await send("message_stop", {"type": "message_stop"})
    await resp.write_eof()
    return resp


async def anthropic_count_tokens(stub: Any, request: web.Request, body: dict[str, Any]) -> web.Response:
    """``/v1/messages/count_tokens``: ``input_tokens`` is 1000 + the length of the messages' JSON,
    so a test can tell the stub's answer from a local count.  ``stub-error-500``, ``stub-context``
    (a 400) and ``stub-hang`` as for messages."""
    model = behaviour(body.get("model", ""))
    if model == "stub-error-500":
        return _anthropic_error(500, "api_error", "the stub's engine exploded")
    if model == "stub-context":
        return _anthropic_error(400, "invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum")
    if model == "stub-hang":
        await asyncio.sleep(3600)
    return web.json_response({"input_tokens": 1000 + len(orjson.dumps(body.get("messages")))})


# ── Ollama ────────────────────────────────────────────────────────────────

def ollama_plan(body: dict[str, Any]) -> tuple[str, str | None]:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tool_result = last.get("content", "") if last.get("role") == "tool" else None
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    tools = [(t.get("function") or {}).get("name", "") for t in body.get("tools") or []]
    return plan(last_user, tools, tool_result)


async def ollama_chat(stub: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    model = behaviour(body.get("model", ""))
    if model == "stub-error-500":
        return web.json_response({"error": "the stub's engine exploded"}, status=500)
    if model == "stub-missing":
        return web.json_response({"error": f"model '{model}' not found"}, status=404)
    text, tool = ollama_plan(body)
    text = talk_then_tool(model, text, tool)
    base = {"model": model, "created_at": "2026-11-23T00:00:00Z"}
    final = {**base, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
             "total_duration": 1000, "load_duration": 10, "prompt_eval_count": 6, "prompt_eval_duration": 100,
             "eval_count": 3, "eval_duration": 200}
    calls = [{"function": {"name": tool, "arguments": TOOL_ARGS}}] if tool else None
    if body.get("stream") is False:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return web.json_response({**final, "message": message}, dumps=lambda o: orjson.dumps(o).decode())
    resp = web.StreamResponse(status=200, headers={"content-type": "application/x-ndjson"})
    await resp.prepare(request)
    for j, word in enumerate(text.split(" ") if text else []):
        await resp.write(orjson.dumps({**base, "message": {"role": "assistant", "content": word if j == 0 else " " + word},
                                       "done": False}) + b"\n")
        if model == "stub-cut" and j == 1:
            await resp.write(b'{"model":"stub-cut","mess')
            request.transport.abort()  # type: ignore[union-attr]
            return resp
        await asyncio.sleep(0)
    if calls:  # Ollama sends a tool call whole, in one line, after any text
        await resp.write(orjson.dumps({**base, "message": {"role": "assistant", "content": "", "tool_calls": calls},
                                       "done": False}) + b"\n")
    await resp.write(orjson.dumps(final) + b"\n")
    await resp.write_eof()
    return resp


# the models the stub's Ollama side lists: name -> (family, what /api/show reports it can do)
OLLAMA_MODELS = {
    "stub-llama:latest": ("llama", ["completion", "tools"]),
    "stub-llava:7b": ("llama", ["completion", "vision"]),
    "qwen2.5-coder:7b": ("qwen2", ["completion", "tools"]),  # coding: inferred from the name
}


async def ollama_tags(stub: Any, request: web.Request) -> web.Response:
    return web.json_response({"models": [
        {"name": name, "model": name, "size": 1, "details": {"family": family, "parameter_size": "8B"}}
        for name, (family, _) in OLLAMA_MODELS.items()]})


async def ollama_show(stub: Any, request: web.Request) -> web.Response:
    body = await request.json()
    if body.get("model") not in OLLAMA_MODELS:
        return web.json_response({"error": "model not found"}, status=404)
    family, capabilities = OLLAMA_MODELS[body["model"]]
    return web.json_response({"capabilities": capabilities, "details": {"family": family}})
