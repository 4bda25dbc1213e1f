"""Ollama answers carry no ids; the ones fastroute makes up (the answer's, its tool calls') are
random: concurrent answers, and the turns of one conversation, never share one.  Both decoder
implementations, the JSON parser, and a real fastroute answering many clients at once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import ModuleType

import httpx
import orjson
import pytest

from fastroute import _speedups
from fastroute.formats import ollama
from tests.conftest import FastrouteProcess

FIXTURE = (Path(__file__).parent / "fixtures" / "ollama_thinking_tools_stream.ndjson").read_bytes()
ANSWER_ID = re.compile(r"ollama-[0-9a-f]{24}")
CALL_ID = re.compile(r"call_[0-9a-f]{24}")
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "python":
        return _speedups.decode_py
    if _speedups.decode_c is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return _speedups.decode_c


def test_stream_decoders_make_up_distinct_ids(impl: ModuleType) -> None:
    answers, calls = [], []
    for _ in range(200):  # as fast as the loop goes: many within one millisecond
        events = impl.OllamaStreamDecoder("test").feed(FIXTURE)
        answers += [e.id for e in events if e.kind == "start"]
        calls += [e.tool_call.id for e in events if e.kind == "tool_call"]
    assert len(answers) == len(calls) == 200
    assert len(set(answers)) == 200 and len(set(calls)) == 200
    # the same shape from both implementations
    assert all(ANSWER_ID.fullmatch(i) for i in answers) and all(CALL_ID.fullmatch(i) for i in calls)


def test_an_id_the_upstream_sent_is_kept(impl: ModuleType) -> None:
    line = orjson.dumps({"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_from_upstream", "function": {"name": "f", "arguments": {}}}]}, "done": False}) + b"\n"
    events = impl.OllamaStreamDecoder("test").feed(line)
    assert [e.tool_call.id for e in events if e.kind == "tool_call"] == ["call_from_upstream"]


def test_json_answers_get_distinct_ids() -> None:
    body = orjson.dumps({"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": 1}}}, {"function": {"name": "g", "arguments": {}}}]},
        "done": True, "done_reason": "stop"})
    parsed = [ollama.parse_response(body) for _ in range(200)]
    assert len({p.id for p in parsed}) == 200 and all(ANSWER_ID.fullmatch(p.id) for p in parsed)
    calls = [c.id for p in parsed for c in p.tool_calls]
    assert len(set(calls)) == 400 and all(CALL_ID.fullmatch(i) for i in calls)


async def _ask(url: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` OpenAI-dialect requests at once to the stub's Ollama provider: half streamed, half
    offering a tool.  The answer ids and tool call ids the clients got."""
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False,
                                 limits=httpx.Limits(max_connections=n)) as client:
        async def one(i: int) -> tuple[list[str], list[str]]:
            body: dict = {"model": "o/stub-llama", "messages": [{"role": "user", "content": f"hi {i}"}],
                          "stream": i % 2 == 0}
            if i % 4 < 2:
                body["tools"] = [TOOL]
            if not body["stream"]:
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                return [answer["id"]], [c["id"] for c in answer["choices"][0]["message"].get("tool_calls") or ()]
            ids, calls = set(), []
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = orjson.loads(line[6:])
                    ids.add(chunk["id"])
                    for choice in chunk["choices"]:
                        calls += [c["id"] for c in choice["delta"].get("tool_calls") or () if c.get("id")]
            assert len(ids) == 1  # every chunk of one stream carries its one id
            return list(ids), calls

        results = await asyncio.gather(*(one(i) for i in range(n)))
    return [i for ids, _ in results for i in ids], [c for _, calls in results for c in calls]


def test_concurrent_answers_through_fastroute_never_share_an_id(router: FastrouteProcess) -> None:
    answers, calls = asyncio.run(_ask(router.url, 120))
    assert len(answers) == 120 and len(calls) == 60  # a tool call in each answer offered a tool
    assert len(set(answers)) == 120 and len(set(calls)) == 60
    assert all(ANSWER_ID.fullmatch(i) for i in answers) and all(CALL_ID.fullmatch(i) for i in calls)
