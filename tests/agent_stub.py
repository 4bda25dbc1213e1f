"""An upstream that plays the model for real coding agents, in the three provider formats.

On 127.0.0.1, in a thread of the test process (aiohttp), like ``tests/stub_upstream.py``
but on its own so those tests stay as they are:

    POST /v1/chat/completions       OpenAI Chat: JSON, or SSE (tool_calls deltas, a usage chunk, [DONE])
    POST /v1/messages               Anthropic: JSON, or SSE (message_start ... message_stop)
    POST /api/chat                  Ollama: JSON, or NDJSON (tool_calls whole, a final done line)
    POST /v1/messages/count_tokens  a rough count
    anything else                   a small JSON answer (a model list, an empty object): never a 500

The brain, the same in every format, reads one request:

- the last message carries a tool result: the text ``the shell said: <result>``;
- no tool result anywhere yet, and a shell tool offered: a call of it running
  ``echo <nonce>`` (the nonce is the test's own);
- anything else (an agent's side request, a title, a summary): plain text.

A shell tool is recognised by its class, not one name (see :data:`SHELL_TOOLS`),
also when a client prefixes it (``<namespace>__exec_command``).  Every request is
recorded in :attr:`AgentStub.requests`, each chat request with the brain's :class:`Reply`;
the readers below (tool schemas, the last tool calls and results) serve the tests too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

#: a shell tool's name (lower case, without any ``prefix__``) -> its arguments for a command
SHELL_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "bash": lambda cmd: {"command": cmd},                            # Claude Code
    "exec_command": lambda cmd: {"cmd": cmd},                        # Codex (unified exec)
    "shell": lambda cmd: {"command": ["bash", "-lc", cmd]},          # Codex (classic shell)
    "shell_command": lambda cmd: {"command": cmd},                   # Codex (shell_command)
}
CHAT_PATHS = frozenset({"/v1/chat/completions", "/v1/messages", "/api/chat"})
PLAIN_TEXT = "Hello from the agent stub."
RESULT_PREFIX = "the shell said: "


def shell_arguments(tool: str, cmd: str) -> dict[str, Any] | None:
    """The arguments to run ``cmd`` with this tool, or None when it is not a shell tool."""
    make = SHELL_TOOLS.get(tool.rpartition("__")[2].lower())
    return make(cmd) if make else None


@dataclass(frozen=True, slots=True)
class Turn:
    """What the brain reads of one request, whatever its format."""

    tools: list[str]
    #: text of the tool result(s) the last message carries, or None
    last_result: str | None
    #: any tool result anywhere in the conversation
    any_result: bool


@dataclass(frozen=True, slots=True)
class Reply:
    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    #: the tool call's id as the stub sent it (Ollama calls carry none)
    call_id: str | None = None


def answer(turn: Turn, nonce: str) -> Reply:
    if turn.last_result is not None:
        return Reply(text=RESULT_PREFIX + turn.last_result.strip())
    if not turn.any_result:
        for name in turn.tools:
            args = shell_arguments(name, f"echo {nonce}")
            if args is not None:
                return Reply(tool=name, arguments=args)
    return Reply(text=PLAIN_TEXT)


def text_of(content: Any) -> str:
    """The text of a content field: a string, or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


# ── reading a request, per format ─────────────────────────────────────────

def tool_schemas(provider_format: str, body: dict[str, Any]) -> dict[str, Any]:
    """The tools a request offers: name -> JSON schema of its arguments."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if provider_format == "anthropic":
        return {t.get("name", ""): t.get("input_schema") for t in tools}
    return {(t.get("function") or {}).get("name", ""): (t.get("function") or {}).get("parameters") for t in tools}


def last_tool_calls(provider_format: str, messages: list[dict[str, Any]]) -> list[tuple[str | None, str, Any]]:
    """(id, name, arguments as an object) of each tool call in the last assistant message."""
    last = next(m for m in reversed(messages) if m.get("role") == "assistant")
    if provider_format == "anthropic":
        return [(b["id"], b["name"], b["input"]) for b in last["content"] if b.get("type") == "tool_use"]
    calls = [(c.get("id"), c["function"]["name"], c["function"]["arguments"]) for c in last.get("tool_calls") or []]
    if provider_format == "openai":  # arguments travel as JSON text
        calls = [(i, name, orjson.loads(args)) for i, name, args in calls]
    return calls


def last_tool_results(provider_format: str, messages: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    """(the call it answers, its text) for each tool result that ends the conversation.

    The call is named by its id, except in Ollama, which pairs a result with its call by the tool's name.
    """
    if provider_format == "anthropic":
        return [(b.get("tool_use_id"), text_of(b.get("content"))) for b in _tool_results(messages[-1])]
    tail = list(itertools.takewhile(lambda m: m.get("role") == "tool", reversed(messages)))[::-1]
    key = "tool_call_id" if provider_format == "openai" else "tool_name"
    return [(m.get(key), text_of(m.get("content"))) for m in tail]


def _tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Anthropic: the ``tool_result`` blocks of a message."""
    content = message.get("content")
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] \
        if isinstance(content, list) else []


def turn_of(provider_format: str, body: dict[str, Any]) -> Turn:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    results = last_tool_results(provider_format, messages) if messages else []
    last = "\n".join(text for _, text in results) if results else None
    if provider_format == "anthropic":
        any_result = any(_tool_results(m) for m in messages)
    else:  # OpenAI Chat and Ollama: tool results are ``role: tool`` messages
        any_result = any(m.get("role") == "tool" for m in messages)
    return Turn(list(tool_schemas(provider_format, body)), last, any_result)


# ── the app ───────────────────────────────────────────────────────────────

@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: what the brain answered (chat requests only)
    reply: Reply | None = None


@dataclass
class AgentStub:
    nonce: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def chats(self) -> list[Recorded]:
        """The chat requests, in order of arrival."""
        return [r for r in self.requests if r.path in CHAT_PATHS]

    # lifecycle ------------------------------------------------------------

    def start(self) -> AgentStub:
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_app(sock))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="agent-stub")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("agent stub did not start")
        return self

    async def _start_app(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._recorded(self._openai))
        app.router.add_post("/chat/completions", self._recorded(self._openai))
        app.router.add_post("/v1/messages", self._recorded(self._anthropic))
        app.router.add_post("/v1/messages/count_tokens", self._recorded(_count_tokens))
        app.router.add_post("/api/chat", self._recorded(self._ollama))
        app.router.add_route("*", "/{tail:.*}", self._recorded(_anything_else))
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]

    def __enter__(self) -> AgentStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _recorded(self, handler: Callable[..., Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
            recorded = Recorded(request.method, request.path, dict(request.headers), body)
            self.requests.append(recorded)
            if request.path in CHAT_PATHS and not isinstance(body, dict):
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
            return await handler(request, body, recorded)

        return handle

    def _think(self, turn: Turn, recorded: Recorded, id_prefix: str | None) -> Reply:
        reply = answer(turn, self.nonce)
        if reply.tool and id_prefix:
            reply = dataclasses.replace(reply, call_id=f"{id_prefix}{next(self._ids):04d}")
        recorded.reply = reply
        return reply

    # OpenAI Chat ----------------------------------------------------------

    async def _openai(self, request: web.Request, body: dict[str, Any], recorded: Recorded) -> web.StreamResponse:
        reply = self._think(turn_of("openai", body), recorded, "call_stub")
        model = body.get("model") or "agent-stub"
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        args = orjson.dumps(reply.arguments).decode()
        if reply.tool:
            message["tool_calls"] = [{"id": reply.call_id, "type": "function",
                                      "function": {"name": reply.tool, "arguments": args}}]
        finish = "tool_calls" if reply.tool else "stop"
        usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
        if body.get("stream") is not True:
            return _json({"id": "chatcmpl-agent", "object": "chat.completion", "created": 1, "model": model,
                          "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({"id": "chatcmpl-agent", "object": "chat.completion.chunk",
                                             "created": 1, "model": model, "choices": choices, **extra}) + b"\n\n"

        def delta(fields: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": fields, "finish_reason": finish_reason}])

        resp = await _open(request, "text/event-stream")
        await resp.write(delta({"role": "assistant", "content": ""}))
        for piece in _pieces(reply.text):
            await resp.write(delta({"content": piece}))
        if reply.tool:
            await resp.write(delta({"tool_calls": [{"index": 0, "id": reply.call_id, "type": "function",
                                                    "function": {"name": reply.tool, "arguments": ""}}]}))
            for piece in _halves(args):
                await resp.write(delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await resp.write(delta({}, finish))
        await resp.write(chunk([], usage=usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # Anthropic --------------------------------------------------------------

    async def _anthropic(self, request: web.Request, body: dict[str, Any],
                         recorded: Recorded) -> web.StreamResponse:
        reply = self._think(turn_of("anthropic", body), recorded, "toolu_stub")
        model = body.get("model") or "agent-stub"
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        if reply.tool:
            blocks.append({"type": "tool_use", "id": reply.call_id, "name": reply.tool,
                           "input": reply.arguments})
        stop = "tool_use" if reply.tool else "end_turn"
        usage = {"input_tokens": 50, "output_tokens": 10, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_agent_stub", "type": "message", "role": "assistant", "model": model}
        if body.get("stream") is not True:
            return _json({**message, "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage})

        resp = await _open(request, "text/event-stream")

        async def send(data: dict[str, Any]) -> None:
            await resp.write(b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

        started = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {**usage, "output_tokens": 1}}
        await send({"type": "message_start", "message": started})
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                await send({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
                for piece in _pieces(block["text"]):
                    await send({"type": "content_block_delta", "index": i,
                                "delta": {"type": "text_delta", "text": piece}})
            else:
                await send({"type": "content_block_start", "index": i,
                            "content_block": {**block, "input": {}}})
                for piece in _halves(orjson.dumps(block["input"]).decode()):
                    await send({"type": "content_block_delta", "index": i,
                                "delta": {"type": "input_json_delta", "partial_json": piece}})
            await send({"type": "content_block_stop", "index": i})
        await send({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]}})
        await send({"type": "message_stop"})
        await resp.write_eof()
        return resp

    # Ollama -----------------------------------------------------------------

    async def _ollama(self, request: web.Request, body: dict[str, Any], recorded: Recorded) -> web.StreamResponse:
        reply = self._think(turn_of("ollama", body), recorded, None)
        base = {"model": body.get("model") or "agent-stub", "created_at": "2026-12-01T00:00:00Z"}
        calls = [{"function": {"name": reply.tool, "arguments": reply.arguments}}] if reply.tool else []
        final = {**base, "done": True, "done_reason": "stop", "total_duration": 1000, "load_duration": 10,
                 "prompt_eval_count": 50, "prompt_eval_duration": 100, "eval_count": 10, "eval_duration": 200}
        if body.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if calls:
                message["tool_calls"] = calls
            return _json({**final, "message": message})
        resp = await _open(request, "application/x-ndjson")
        for piece in _pieces(reply.text):
            await resp.write(orjson.dumps({**base, "message": {"role": "assistant", "content": piece},
                                           "done": False}) + b"\n")
        if calls:  # Ollama sends a tool call whole, in one line
            await resp.write(orjson.dumps({**base, "message": {"role": "assistant", "content": "",
                                                               "tool_calls": calls}, "done": False}) + b"\n")
        await resp.write(orjson.dumps({**final, "message": {"role": "assistant", "content": ""}}) + b"\n")
        await resp.write_eof()
        return resp


# ── the rest ──────────────────────────────────────────────────────────────

async def _count_tokens(request: web.Request, body: Any, recorded: Recorded) -> web.Response:
    return _json({"input_tokens": max(1, len(orjson.dumps(body)) // 4)})


async def _anything_else(request: web.Request, body: Any, recorded: Recorded) -> web.Response:
    if request.path.endswith("/models"):
        return _json({"object": "list", "data": [{"id": "agent-stub", "object": "model"}]})
    if request.path == "/api/tags":
        return _json({"models": [{"name": "agent-stub:latest", "model": "agent-stub:latest", "size": 1}]})
    return _json({})


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


async def _open(request: web.Request, content_type: str) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"content-type": content_type, "cache-control": "no-cache"})
    await resp.prepare(request)
    return resp


def _pieces(text: str) -> list[str]:
    """Text as streamed: word by word, spaces kept."""
    words = text.split(" ") if text else []
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _halves(text: str) -> list[str]:
    cut = len(text) // 2
    return [text[:cut], text[cut:]]


# ── fastroute in front of it ──────────────────────────────────────────────

#: model-name prefixes the agents ask for: Claude Code (claude-opus-4-8, its small claude-haiku-*), Codex
AGENT_MODEL_PREFIXES = ("claude-", "gpt-")


def router_config(stub: AgentStub, provider_format: str, log_path: Any) -> str:
    """A fastroute config routing every agent model to one provider of this format at the stub."""
    base_url = stub.root + "/v1" if provider_format == "openai" else stub.root
    rules = "".join(f'\n[[routers]]\ntype = "prefix"\nmodel_prefix = "{prefix}"\nprovider = "agent-stub"\n'
                    for prefix in AGENT_MODEL_PREFIXES)
    return f"""
[logging]
enabled = true
path = "{log_path}"

[[providers]]
name = "agent-stub"
format = "{provider_format}"
base_url = "{base_url}"
{rules}"""
