"""A provider's answer of the wrong shape is a 502 naming where it is wrong, never a crash.

A small aiohttp server on 127.0.0.1 answers each call with the bytes the test gives it; the
real providers of each format (through the real aiohttp upstream client) call it on the
translated path (``Provider.send``), where fastroute reads the answer itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web

from fastroute.canonical import ChatRequest, Message, TextPart
from fastroute.config import config_from_dict
from fastroute.errors import UpstreamProtocolError
from fastroute.providers import build_providers
from fastroute.providers.transport import make_client

GOOD = {
    "openai": {"id": "c", "model": "m", "choices": [{"finish_reason": "stop", "message": {"content": "hello"}}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    "anthropic": {"id": "msg", "model": "m", "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 3, "output_tokens": 1}},
    "ollama": {"model": "m", "message": {"role": "assistant", "content": "hello"}, "done": True,
               "prompt_eval_count": 3, "eval_count": 1},
}

ODD = [
    ("openai", {"choices": [None]}, "choices[0]: expected an object, got null"),
    ("openai", {"choices": [{"message": {"tool_calls": [None]}}]},
     "choices[0].message.tool_calls[0]: expected an object, got null"),
    ("openai", {"choices": [{"message": {"content": 5}}]},
     "choices[0].message.content: expected a string or an array, got an integer"),
    ("openai", {"choices": [], "usage": {"prompt_tokens": "3"}}, "usage.prompt_tokens: expected a number, got a string"),
    ("openai", [1, 2], "the body: expected an object, got an array"),
    ("anthropic", {"content": [{"type": "tool_use", "input": []}]}, "content[0].input: expected an object, got an array"),
    ("anthropic", {"content": "hello"}, "content: expected an array, got a string"),
    ("anthropic", {"content": [{"text": "x"}]}, "content[0]: expected an object with a string 'type', got null"),
    ("anthropic", {"content": [], "usage": []}, "usage: expected an object, got an array"),
    ("ollama", {"message": [None]}, "message: expected an object, got an array"),
    ("ollama", {"message": {"tool_calls": True}}, "message.tool_calls: expected an array, got a boolean"),
    ("ollama", {"message": {"content": "x"}, "eval_count": {"n": 1}}, "eval_count: expected a number, got an object"),
]


async def _call(fmt: str, answer: bytes) -> Any:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}" + ("/v1" if fmt == "openai" else "")
    config = config_from_dict({"providers": [{"name": "odd", "format": fmt, "base_url": base}],
                               "routers": [{"type": "prefix", "model_prefix": "", "provider": "odd"}]})
    client = make_client("aiohttp")
    provider = build_providers(config, client)["odd"]
    try:
        request = ChatRequest(model="m", messages=[Message("user", [TextPart("hi")])], max_tokens=5)
        return await provider.send(request)
    finally:
        await client.aclose()
        await runner.cleanup()


@pytest.mark.parametrize("fmt", list(GOOD))
def test_a_good_answer_is_read(fmt: str) -> None:
    response = asyncio.run(_call(fmt, orjson.dumps(GOOD[fmt])))
    assert response.text() == "hello"
    assert response.usage.input_tokens == 3


@pytest.mark.parametrize("fmt, answer, where", ODD)
def test_an_odd_answer_is_a_502_naming_the_path(fmt: str, answer: Any, where: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        asyncio.run(_call(fmt, orjson.dumps(answer)))
    assert info.value.http_status == 502
    assert info.value.message == f"provider 'odd' answered with a body fastroute cannot read: {where}"


def test_a_body_that_is_not_json_is_a_502() -> None:
    with pytest.raises(UpstreamProtocolError, match="cannot read: JSONDecodeError"):
        asyncio.run(_call("openai", b"<html>gateway</html>"))


@pytest.mark.parametrize("fmt, body, message, passed_on", [
    ("openai", {"error": {"message": "context too long", "type": "invalid_request_error"}}, "context too long", True),
    ("openai", {"error": {"message": "", "type": "x"}}, '{"error":{"message":"","type":"x"}}', False),
    ("openai", {"error": {"message": ["odd"]}}, '{"error":{"message":["odd"]}}', False),
    ("openai", {"error": {"message": "why", "type": ["odd"]}}, '{"error":{"message":"why","type":["odd"]}}', False),
    ("openai", {"error": "plain words"}, "plain words", False),
    ("openai", {"error": ""}, '{"error":""}', False),
    ("anthropic", {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}, "no", True),
    ("anthropic", {"type": "error", "error": {"type": 5, "message": None}}, '{"type":"error","error":{"type":5,'
                                                                           '"message":null}}', False),
    ("anthropic", {"error": {"code": 500}}, '{"error":{"code":500}}', False),
    ("anthropic", {"error": {"message": "said without a type"}}, "said without a type", False),
    ("ollama", {"error": "model not found"}, "model not found", True),
    ("ollama", {"error": ""}, '{"error":""}', False),
    ("ollama", {"error": {"message": "x"}}, '{"error":{"message":"x"}}', False),
])
def test_an_upstream_error_body_is_passed_on_only_in_its_own_shape(fmt: str, body: Any, message: str,
                                                                   passed_on: bool) -> None:
    """A provider's error reaches a client of its own dialect untouched only when it is a real error
    body of that dialect; otherwise the client gets fastroute's error, whose message is never empty."""
    from fastroute.formats import anthropic, ollama, openai
    dialect = {"openai": openai, "anthropic": anthropic, "ollama": ollama}[fmt]
    raw = orjson.dumps(body)
    said, _ = dialect.upstream_error_message(raw)
    assert said == message
    assert getattr(dialect, f"_is_{fmt}_error")(raw) is passed_on
