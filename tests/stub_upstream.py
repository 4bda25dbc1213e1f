"""A small OpenAI-dialect upstream for tests, on 127.0.0.1, in a thread of the test process.

Behaviour is chosen by the ``model`` the request carries (so it works through
fastroute, which forwards the body):

    anything else         answers "stub: <last user text>" (JSON or SSE, usage included)
    stub-error-500        HTTP 500 with an OpenAI error body
    stub-context          HTTP 400 context_length_exceeded, as OpenAI words it
    stub-429              HTTP 429 rate limit
    stub-hang             never answers (read timeout)
    stub-cut              streams two chunks, then drops the connection mid-event
    stub-slow             streams a chunk every 50 ms for a minute (client disconnect tests)
    stub-paced            streams ten chunks 100 ms apart, then ends properly (shutdown tests)
    stub-paced-long       the same with sixty chunks: six seconds
    stub-linger           streams the whole answer and [DONE], then ends the body 2 s later
    stub-garbage          HTTP 200 with a body that is not JSON
    stub-nousage          streams without a usage chunk even when asked
    stub-odd-event        streams a chunk, then valid JSON of an odd shape ("choices": [null])
    stub-talk-then-tool   offered tools, writes a short text and then calls the first one, in one answer

Every request is recorded (path, headers, JSON body) in ``stub.requests``; model lookups
(``GET /api/tags``, ``POST /api/show``, ``GET /v1/models``: discovery) in ``stub.lookups``, the last 200;
``stub.cancelled`` counts streams whose client went away before the end.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests import stub_dialects


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    query: str = ""


@dataclass
class StubUpstream:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    cancelled: int = 0
    finished_streams: int = 0
    #: GET /api/tags calls (model discovery), counted apart from the chat requests
    tag_calls: int = 0
    #: the last model lookups (discovery), apart from the chat requests: background discovery never crowds them
    lookups: collections.deque[Recorded] = field(default_factory=lambda: collections.deque(maxlen=200))
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # lifecycle ------------------------------------------------------------

    def start(self) -> StubUpstream:
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        sock.close()
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_app())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="stub-upstream")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stub upstream did not start")
        return self

    async def _start_app(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", self._dialect(stub_dialects.anthropic_messages))
        app.router.add_post("/v1/messages/count_tokens", self._dialect(stub_dialects.anthropic_count_tokens))
        app.router.add_post("/api/chat", self._dialect(stub_dialects.ollama_chat))
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        await self._runner.cleanup()  # type: ignore[union-attr]
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # handlers still hanging on purpose (stub-hang)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> None:
        self.requests.clear()
        self.cancelled = 0
        self.finished_streams = 0
        self.lookups.clear()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    # handlers -------------------------------------------------------------

    def _lookup(self, request: web.Request) -> None:
        self.lookups.append(Recorded(request.path, dict(request.headers), None, request.query_string))

    async def _show(self, request: web.Request) -> web.Response:
        self._lookup(request)
        return await stub_dialects.ollama_show(self, request)

    async def _tags(self, request: web.Request) -> web.Response:
        self._lookup(request)
        self.tag_calls += 1
        return await stub_dialects.ollama_tags(self, request)

    def _dialect(self, handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            self.requests.append(Recorded(request.path, dict(request.headers), body, request.query_string))
            return await handler(self, request, body)

        return handle

    async def _models(self, request: web.Request) -> web.Response:
        self._lookup(request)
        return web.json_response({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        model = body.get("model", "") if isinstance(body, dict) else ""
        stream = isinstance(body, dict) and body.get("stream") is True
        if model == "stub-error-500":
            return _error(500, "the stub's engine exploded", "server_error")
        if model == "stub-context":
            return _error(400, "This model's maximum context length is 8192 tokens. However, your messages "
                               "resulted in 9000 tokens.", "invalid_request_error", code="context_length_exceeded")
        if model == "stub-429":
            return _error(429, "Rate limit reached for requests", "rate_limit_error", code="rate_limit_exceeded")
        if model == "stub-hang":
            await asyncio.sleep(3600)
        if model == "stub-cookie":  # an upstream that sets a cookie: fastroute must not keep it
            resp = web.json_response(_completion(model, "cookie: " + request.headers.get("Cookie", "none")))
            resp.set_cookie("session", "user-A-secret")
            return resp
        if model == "stub-garbage":
            return web.Response(status=200, body=b"<html>not json</html>", content_type="text/html")
        if model == "stub-odd-event" and stream:  # valid SSE, then an event of a shape nobody expects
            resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(_chunk(model, {"role": "assistant", "content": "fine so far"}))
            await resp.write(b'data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","choices":[null]}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        messages = body.get("messages") or []
        tool_result = messages[-1].get("content") if messages and messages[-1].get("role") == "tool" else None
        tools = [(t.get("function") or {}).get("name", "") for t in body.get("tools") or []]
        text, tool = stub_dialects.plan(_last_user_text(body), tools, tool_result)
        if tool:
            return await self._tool_call(request, model, tool, stream,
                                         stub_dialects.talk_then_tool(model, text, tool))
        if not stream:
            return web.json_response(_completion(model, text), dumps=lambda o: orjson.dumps(o).decode())
        options = body.get("stream_options") or {}
        return await self._stream(request, model, text, bool(options.get("include_usage")) and model != "stub-nousage")

    async def _tool_call(self, request: web.Request, model: str, tool: str, stream: bool,
                         text: str = "") -> web.StreamResponse:
        args = orjson.dumps(stub_dialects.TOOL_ARGS).decode()
        call = {"id": "call_stub1", "type": "function", "function": {"name": tool, "arguments": args}}
        if not stream:
            done = _completion(model, "")
            done["choices"][0]["message"] = {"role": "assistant", "content": text or None, "tool_calls": [call]}
            done["choices"][0]["finish_reason"] = "tool_calls"
            return web.json_response(done, dumps=lambda o: orjson.dumps(o).decode())
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(text.split(" ") if text else []):  # the text first, as OpenAI streams it
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            await resp.write(_chunk(model, delta))
        await resp.write(_chunk(model, {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_stub1", "type": "function", "function": {"name": tool, "arguments": ""}}]}))
        for piece in (args[:5], args[5:]):
            await resp.write(_chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await resp.write(_chunk(model, {}, finish="tool_calls"))
        await resp.write(b"data: " + orjson.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk",
                                                    "created": 1, "model": model, "choices": [],
                                                    "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                                              "total_tokens": 8}}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, model: str, text: str, usage_wanted: bool) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        try:
            if model == "stub-slow":
                for i in range(1200):
                    await resp.write(_chunk(model, {"content": f"tick{i} "}))
                    await asyncio.sleep(0.05)
            paced = model.startswith("stub-paced")
            if paced:
                words = [f"part{i}" for i in range(60 if model == "stub-paced-long" else 10)]
            for i, word in enumerate(words):
                if paced:
                    await asyncio.sleep(0.1)
                await resp.write(_chunk(model, {"content": word if i == 0 else " " + word}))
                if model == "stub-cut" and i == 1:
                    await resp.write(b'data: {"id":"chatcmpl-stub","choi')  # half an event, then gone
                    request.transport.abort()  # type: ignore[union-attr]
                    return resp
            await resp.write(_chunk(model, {}, finish="stop"))
            if usage_wanted:  # as OpenAI does: a usage chunk only when stream_options asks for it
                usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
                await resp.write(b"data: " + orjson.dumps({"id": "chatcmpl-stub", "object": "chat.completion.chunk",
                                                            "created": 1, "model": model, "choices": [],
                                                            "usage": usage}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            if model == "stub-linger":  # the answer is whole; the body's own end comes later
                await asyncio.sleep(2)
            await resp.write_eof()
            self.finished_streams += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except ConnectionResetError:
            self.cancelled += 1
        return resp


def _last_user_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5 + len(text.split()),
                  "prompt_tokens_details": {"cached_tokens": 2}},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }) + b"\n\n"


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}))
