"""Ollama clients and Ollama providers, through a real fastroute, with the official SDKs."""

from __future__ import annotations

import anthropic
import httpx
import ollama
import openai
import orjson
import pytest

from tests.conftest import FastrouteProcess
from tests.stub_dialects import TOOL_ARGS
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hello big world"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def client(router: FastrouteProcess) -> ollama.Client:
    return ollama.Client(host=router.url, timeout=30)


@pytest.mark.parametrize("model, expected", [("echo", "hello big world"), ("stub-model", "stub: hello big world"),
                                             ("a/stub-model", "stub: hello big world"),
                                             ("o/stub-llama", "stub: hello big world")])
def test_ollama_client_text(router: FastrouteProcess, fresh_stub: StubUpstream, model: str, expected: str) -> None:
    out = client(router).chat(model=model, messages=USER, stream=False)
    assert out.message.content == expected and out.done
    assert out.eval_count > 0 and out.prompt_eval_count > 0
    parts = list(client(router).chat(model=model, messages=USER, stream=True))
    assert "".join(p.message.content for p in parts) == expected
    assert parts[-1].done and parts[-1].eval_count > 0
    assert all(not p.done for p in parts[:-1])


def test_ollama_wire_is_strict_ndjson(router: FastrouteProcess) -> None:
    for model in ("echo", "stub-model", "o/stub-llama"):
        raw = httpx.post(f"{router.url}/api/chat", json={"model": model, "messages": USER}, timeout=30).content
        lines = raw.split(b"\n")
        assert lines[-1] == b"" and all(line.strip() for line in lines[:-1]), raw
        assert orjson.loads(lines[-2])["done"] is True


@pytest.mark.parametrize("model", ["stub-model", "a/stub-model", "o/stub-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_ollama_client_tool_round_trip(router: FastrouteProcess, fresh_stub: StubUpstream, model: str,
                                       stream: bool) -> None:
    c = client(router)
    if stream:
        parts = list(c.chat(model=model, messages=USER, tools=[TOOL], stream=True))
        calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    else:
        calls = c.chat(model=model, messages=USER, tools=[TOOL], stream=False).message.tool_calls
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather" and dict(calls[0].function.arguments) == TOOL_ARGS
    follow = USER + [{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": TOOL_ARGS}}]},
        {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"}]
    out = c.chat(model=model, messages=follow, tools=[TOOL], stream=False)
    assert out.message.content == "tool said: sunny, 21C"


def test_non_stream_sends_stream_false_upstream(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0).chat.completions.create(
        model="o/stub-llama", messages=USER)
    assert fresh_stub.requests[-1].path == "/api/chat" and fresh_stub.requests[-1].body["stream"] is False
    client(router).chat(model="o/stub-llama", messages=USER, stream=False)  # passthrough
    assert fresh_stub.requests[-1].body["stream"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_openai_and_anthropic_clients_to_ollama_provider_with_tools(router: FastrouteProcess,
                                                                    fresh_stub: StubUpstream, stream: bool) -> None:
    gpt = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0)
    if stream:
        chunks = list(gpt.chat.completions.create(model="o/stub-llama", messages=USER, tools=[TOOL], stream=True))
        deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
        assert deltas[0].index == 0 and deltas[0].function.name == "get_weather"
        args = "".join(d.function.arguments or "" for d in deltas)
    else:
        out = gpt.chat.completions.create(model="o/stub-llama", messages=USER, tools=[TOOL])
        args = out.choices[0].message.tool_calls[0].function.arguments
        assert out.choices[0].finish_reason == "tool_calls"
    assert orjson.loads(args) == TOOL_ARGS
    assert fresh_stub.requests[-1].body["tools"] == [TOOL]
    claude = anthropic.Anthropic(base_url=router.url, api_key="x", max_retries=0)
    tool = {"name": "get_weather", "description": "Weather in a city",
            "input_schema": TOOL["function"]["parameters"]}
    msg = claude.messages.create(model="o/stub-llama", max_tokens=50, messages=USER, tools=[tool])
    use = [b for b in msg.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == TOOL_ARGS and msg.stop_reason == "tool_use"


def test_image_url_to_ollama_is_a_clear_400(router: FastrouteProcess) -> None:
    gpt = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        gpt.chat.completions.create(model="o/stub-llama", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "provider 'stub-ollama'" in str(info.value) and "by URL" in str(info.value)


def test_tags_show_version(router: FastrouteProcess) -> None:
    c = client(router)
    names = {m.model for m in c.list().models}
    assert {"echo", "stub-model", "o/stub-llama", "alias", "stub"} <= names  # the list is test_models_list's
    assert "o/" not in names and "a/" not in names  # families, not models
    shown = c.show("o/stub-llama")
    assert "tools" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as info:
        c.show("nobody-serves-this")
    assert info.value.status_code == 404
    assert httpx.get(f"{router.url}/api/version").json()["version"]


def test_ollama_errors_and_cut_stream(router: FastrouteProcess) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client(router).chat(model="nobody", messages=USER, stream=False)
    assert info.value.status_code == 400 and "no provider configured" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client(router).chat(model="o/stub-error-500", messages=USER, stream=False)
    assert info.value.status_code == 502 and "provider 'stub-ollama'" in info.value.error
    for model in ("o/stub-cut", "stub-cut"):
        raw = httpx.post(f"{router.url}/api/chat", json={"model": model, "messages": USER}, timeout=30).content
        last = orjson.loads(raw.rstrip(b"\n").split(b"\n")[-1])
        assert "error" in last and "done" not in last, raw
        with pytest.raises(ollama.ResponseError):
            list(client(router).chat(model=model, messages=USER, stream=True))
