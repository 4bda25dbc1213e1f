"""Anthropic clients and Anthropic providers, through a real fastroute, with the official SDKs."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import PROVIDER_KEY, FastrouteProcess
from tests.stub_dialects import SIGNATURE, TOOL_ARGS
from tests.stub_upstream import StubUpstream

WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
OPENAI_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                   "parameters": WEATHER["input_schema"]}}


def claude(router: FastrouteProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=router.url, api_key="client-key-xyz", max_retries=0, timeout=30)


def gpt(router: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="client-key-xyz", max_retries=0, timeout=30)


USER = [{"role": "user", "content": "hello big world"}]


# ── Anthropic client, any provider ────────────────────────────────────────

@pytest.mark.parametrize("model, expected", [("echo", "hello big world"), ("stub-model", "stub: hello big world"),
                                             ("a/stub-model", "stub: hello big world"),
                                             ("o/stub-llama", "stub: hello big world")])
def test_anthropic_client_text(router: FastrouteProcess, fresh_stub: StubUpstream, model: str, expected: str) -> None:
    msg = claude(router).messages.create(model=model, max_tokens=100, messages=USER, system="be brief")
    assert msg.content[0].type == "text" and msg.content[0].text == expected
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with claude(router).messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


def test_anthropic_client_to_openai_provider_translates_the_request(router: FastrouteProcess,
                                                                    fresh_stub: StubUpstream) -> None:
    claude(router).messages.create(
        model="stub-model", max_tokens=77, stop_sequences=["END"], extra_body={"temperature": 0.2, "top_p": 0.9},
        system=[{"type": "text", "text": "sys one", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "sys two"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "look"},
                                               {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}]}])
    sent = fresh_stub.requests[-1]
    assert sent.path == "/v1/chat/completions"
    body = sent.body
    assert body["messages"][0] == {"role": "system", "content": "sys one\n\nsys two"}
    assert body["messages"][1]["content"] == [{"type": "text", "text": "look"},
                                              {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (77, 0.2, 0.9, ["END"])
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


@pytest.mark.parametrize("model", ["stub-model", "a/stub-model", "o/stub-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_client_tool_round_trip(router: FastrouteProcess, fresh_stub: StubUpstream, model: str,
                                          stream: bool) -> None:
    client = claude(router)
    if stream:
        with client.messages.stream(model=model, max_tokens=100, messages=USER, tools=[WEATHER]) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model=model, max_tokens=100, messages=USER, tools=[WEATHER])
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == TOOL_ARGS
    assert first.stop_reason == "tool_use"
    # the upstream got the tool in its own dialect
    sent = fresh_stub.requests[-1].body
    assert sent["tools"] == ([WEATHER] if model.startswith("a/") else [OPENAI_WEATHER])
    follow = USER + [{"role": "assistant", "content": [u.model_dump() for u in uses]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                   "content": [{"type": "text", "text": "sunny, 21C"}]}]}]
    second = client.messages.create(model=model, max_tokens=100, messages=follow, tools=[WEATHER])
    assert second.content[0].text == "tool said: sunny, 21C"
    sent = fresh_stub.requests[-1].body
    if model == "stub-model":
        assert sent["messages"][-2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                    "arguments": orjson.dumps(TOOL_ARGS).decode()}
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": uses[0].id, "content": "sunny, 21C"}


def test_thinking_signature_survives_byte_for_byte(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    client = claude(router)
    kwargs = dict(model="a/stub-model", max_tokens=2000, messages=USER,
                  thinking={"type": "enabled", "budget_tokens": 1024})
    msg = client.messages.create(**kwargs)
    assert msg.content[0].type == "thinking" and msg.content[0].signature == SIGNATURE
    with client.messages.stream(**kwargs) as s:
        final = s.get_final_message()
    assert final.content[0].signature == SIGNATURE
    # and it goes back upstream untouched on the next turn
    follow = USER + [{"role": "assistant", "content": [b.model_dump() for b in final.content]},
                     {"role": "user", "content": "more"}]
    client.messages.create(model="a/stub-model", max_tokens=2000, messages=follow)
    assert fresh_stub.requests[-1].body["messages"][1]["content"][0]["signature"] == SIGNATURE


def test_anthropic_passthrough_is_untouched_and_keyed(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    body = {"model": "a/stub-model", "max_tokens": 10, "messages": USER, "metadata": {"user_id": "u1"},
            "future_field": [1]}
    resp = httpx.post(f"{router.url}/v1/messages", json=body,
                      headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01",
                               "anthropic-beta": "some-beta-2026"})
    assert resp.status_code == 200
    direct = httpx.post(f"http://{fresh_stub.host}:{fresh_stub.port}/v1/messages", json=body)
    assert resp.content == direct.content
    sent = fresh_stub.requests[0]
    assert sent.body == body
    assert sent.headers["x-api-key"] == PROVIDER_KEY and sent.headers["anthropic-beta"] == "some-beta-2026"


def test_task_budget_sends_the_beta_header(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    budget = {"type": "tokens", "total": 5000}
    # translated (OpenAI client -> Anthropic provider): fastroute adds the beta itself
    gpt(router).chat.completions.create(model="a/stub-model", messages=USER, extra_body={"task_budget": budget})
    sent = fresh_stub.requests[-1]
    assert sent.body["output_config"]["task_budget"] == budget
    assert "task-budgets-2026-03-13" in sent.headers["anthropic-beta"].split(",")


# ── OpenAI client, Anthropic provider ─────────────────────────────────────

@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_to_anthropic_provider(router: FastrouteProcess, fresh_stub: StubUpstream, stream: bool) -> None:
    client = gpt(router)
    if stream:
        chunks = list(client.chat.completions.create(model="a/stub-model", messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        out = client.chat.completions.create(model="a/stub-model", messages=USER)
        text, usage = out.choices[0].message.content, out.usage
    assert text == "stub: hello big world"
    assert usage.prompt_tokens == 10 and usage.prompt_tokens_details.cached_tokens == 3
    sent = fresh_stub.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01" and sent.body["max_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_tools_through_anthropic_provider(router: FastrouteProcess, fresh_stub: StubUpstream,
                                                        stream: bool) -> None:
    client = gpt(router)
    if stream:
        chunks = list(client.chat.completions.create(model="a/stub-model", messages=USER, tools=[OPENAI_WEATHER],
                                                     stream=True))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert all(d.index == 0 for d in deltas)
        assert deltas[0].id == "toolu_stub1" and deltas[0].function.name == "get_weather"
        args = "".join(d.function.arguments or "" for d in deltas)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        out = client.chat.completions.create(model="a/stub-model", messages=USER, tools=[OPENAI_WEATHER])
        call = out.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and out.choices[0].finish_reason == "tool_calls"
        args = call.function.arguments
    assert orjson.loads(args) == TOOL_ARGS
    assert fresh_stub.requests[-1].body["tools"] == [WEATHER]


# ── errors in the Anthropic dialect ──────────────────────────────────────

def test_anthropic_errors_in_anthropic_shape(router: FastrouteProcess) -> None:
    resp = httpx.post(f"{router.url}/v1/messages", json={"model": "x", "max_tokens": 5})
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="no provider configured for model 'nope'"):
        claude(router).messages.create(model="nope", max_tokens=5, messages=USER)
    with pytest.raises(anthropic.InternalServerError) as info:
        claude(router).messages.create(model="stub-error-500", max_tokens=5, messages=USER)
    assert info.value.status_code == 502 and "provider 'stub'" in str(info.value)
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        claude(router).messages.create(model="a/stub-context", max_tokens=5, messages=USER)


@pytest.mark.parametrize("model", ["stub-cut", "a/stub-cut"])
def test_cut_stream_is_an_error_event_for_anthropic_clients(router: FastrouteProcess, model: str) -> None:
    with httpx.stream("POST", f"{router.url}/v1/messages", timeout=30,
                      json={"model": model, "max_tokens": 50, "messages": USER, "stream": True}) as resp:
        raw = resp.read()
    assert b"event: error" in raw and b"message_stop" not in raw
    with pytest.raises(anthropic.APIError):
        with claude(router).messages.stream(model=model, max_tokens=50, messages=USER) as s:
            for _ in s.text_stream:
                pass


def test_usage_is_estimated_when_the_upstream_gives_none(router: FastrouteProcess) -> None:
    with claude(router).messages.stream(model="stub-nousage", max_tokens=50, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "stub: hello big world"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    with httpx.stream("POST", f"{router.url}/v1/messages", timeout=30,
                      json={"model": "stub-nousage", "max_tokens": 5, "messages": USER, "stream": True}) as resp:
        raw = resp.read()
    delta = [line for line in raw.split(b"\n") if line.startswith(b"data: ") and b"message_delta" in line][0]
    assert orjson.loads(delta[6:])["usage"]["estimated"] is True
