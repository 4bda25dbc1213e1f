"""The stack's ceiling: Granian + BlackSheep answering fixed bytes, and a bare ASGI app beside it.

    python -m granian --interface asgi --loop uvloop --workers 1 --no-access-log \\
        --factory benchmarks.ceiling_app:blacksheep_app
    python -m granian ... --factory benchmarks.ceiling_app:bare_app

Both read the body of ``POST /v1/chat/completions`` and answer it with the ``chat.completion``
bytes the upstream stub of ``benchmarks/e2e.py`` answers (``application/json``), ``GET /health``
with ``ok``; anything else is a 404.  The BlackSheep app answers a body with ``"stream":true``
with the stub's stream (:data:`STREAM_EVENTS`, from memory, one send per event, as fastroute
relays it): the stack's ceiling for streams.  Run under the Granian settings fastroute
uses (``fastroute/server/runner.py``: ASGI, uvloop, a factory, access log off), they are what a
fastroute request costs with no pipeline and no upstream call: ``benchmarks/e2e.py`` measures
fastroute against them in the same run.

The apps are built by factories so that ``e2e.py`` can import :data:`COMPLETION` without
BlackSheep, and the bare app's worker never imports it.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

MODEL = "bench-model"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


COMPLETION = dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the stub."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
})
CHAT_PATH = "/v1/chat/completions"
STREAM_TOKENS = 20


def stream_events() -> list[bytes]:
    """The SSE events of the stub's stream: STREAM_TOKENS content chunks, a usage chunk, [DONE]."""
    events = []
    for i in range(STREAM_TOKENS):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": f" tok{i}"} if i == 0
                              else {"content": f" tok{i}"}, "logprobs": None,
                              "finish_reason": "stop" if i == STREAM_TOKENS - 1 else None}]}
        events.append(b"data: " + dumps(chunk) + b"\n\n")
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
             "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": STREAM_TOKENS,
                                      "total_tokens": 9 + STREAM_TOKENS}}
    events.append(b"data: " + dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


STREAM_EVENTS = stream_events()


def blacksheep_app() -> Any:
    """A BlackSheep ``Application`` built like fastroute's, with the two routes.

    (No ``from __future__ import annotations`` in this file: BlackSheep evaluates the handlers'
    annotations, and ``Response`` is a local name.)"""
    from blacksheep import Application, Content, Request, Response, StreamedContent

    app = Application(show_error_details=False)

    async def events() -> AsyncIterator[bytes]:
        for event in STREAM_EVENTS:
            yield event

    async def chat(request: Request) -> Response:
        if b'"stream":true' in (await request.read() or b""):
            return Response(200, [(b"cache-control", b"no-cache")], StreamedContent(b"text/event-stream", events))
        return Response(200, None, Content(b"application/json", COMPLETION))

    async def health() -> Response:
        return Response(200, None, Content(b"text/plain; charset=utf-8", b"ok"))

    app.router.add_post(CHAT_PATH, chat)
    app.router.add_get("/health", health)
    return app


def _start(status: int, content_type: bytes, length: int) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(length).encode())]}


def bare_app() -> Any:
    """The same two routes as a bare ASGI callable: Granian alone, no framework."""
    chat = (_start(200, b"application/json", len(COMPLETION)), {"type": "http.response.body", "body": COMPLETION})
    health = (_start(200, b"text/plain", 2), {"type": "http.response.body", "body": b"ok"})
    missing = (_start(404, b"text/plain", 9), {"type": "http.response.body", "body": b"not found"})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: nothing to set up
            return
        method, path = scope["method"], scope["path"]
        answer = chat if method == "POST" and path == CHAT_PATH else \
            health if method == "GET" and path == "/health" else missing
        while (await receive()).get("more_body"):  # the request body, read and dropped
            pass
        await send(answer[0])
        await send(answer[1])

    return app
