"""OpenAI Responses clients to every provider dialect, with the official SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import FastrouteProcess
from tests.stub_dialects import TOOL_ARGS
from tests.stub_upstream import StubUpstream

MODELS = [("echo", "hello big world"), ("stub-model", "stub: hello big world"),
          ("a/stub-model", "stub: hello big world"), ("o/stub-llama", "stub: hello big world")]
TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def client(router: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0, timeout=30)


@pytest.mark.parametrize("model, expected", MODELS)
def test_responses_text(router: FastrouteProcess, fresh_stub: StubUpstream, model: str, expected: str) -> None:
    c = client(router)
    out = c.responses.create(model=model, input="hello big world", instructions="be brief")
    assert out.output_text == expected and out.status == "completed"
    assert out.usage is not None and out.usage.output_tokens > 0
    with c.responses.stream(model=model, input="hello big world") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == expected and final.output_text == expected
    assert final.usage is not None and final.usage.total_tokens > 0


def test_responses_stream_event_order(router: FastrouteProcess) -> None:
    with httpx.stream("POST", f"{router.url}/v1/responses", timeout=30,
                      json={"model": "stub-model", "input": "hello big world", "stream": True}) as resp:
        raw = resp.read().decode()
    kinds = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created"
    first_delta = kinds.index("response.output_text.delta")
    assert kinds.index("response.output_item.added") < kinds.index("response.content_part.added") < first_delta
    assert kinds[-1] == "response.completed"
    completed = json.loads(raw.strip().splitlines()[-1][6:])
    assert completed["response"]["output"][0]["content"][0]["text"] == "stub: hello big world"
    numbers = [json.loads(line[6:])["sequence_number"] for line in raw.splitlines() if line.startswith("data: ")]
    assert numbers == list(range(len(numbers)))


def test_responses_request_is_translated(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    client(router).responses.create(
        model="stub-model", instructions="sys", max_output_tokens=33, temperature=0.5,
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
        input=[{"role": "developer", "content": "dev note"},
               {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                            {"type": "input_image", "image_url": "https://x/cat.png"}]}])
    body = fresh_stub.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "sys\n\ndev note"}
    assert body["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    assert body["max_tokens"] == 33 and body["temperature"] == 0.5
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    client(router).responses.create(model="a/stub-model", input="x",
                                    text={"format": {"type": "json_schema", "name": "t", "schema": schema}})
    assert fresh_stub.requests[-1].body["output_config"]["format"] == {"type": "json_schema", "schema": schema}
    client(router).responses.create(model="o/stub-llama", input="x",
                                    text={"format": {"type": "json_schema", "name": "t", "schema": schema}})
    assert fresh_stub.requests[-1].body["format"] == schema


@pytest.mark.parametrize("model", ["stub-model", "a/stub-model", "o/stub-llama"])
@pytest.mark.parametrize("stream", [False, True])
def test_responses_tool_round_trip(router: FastrouteProcess, fresh_stub: StubUpstream, model: str,
                                   stream: bool) -> None:
    c = client(router)
    if stream:
        with c.responses.stream(model=model, input="hello big world", tools=[TOOL]) as s:
            first = s.get_final_response()
    else:
        first = c.responses.create(model=model, input="hello big world", tools=[TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == TOOL_ARGS
    follow = [{"role": "user", "content": "hello big world"},
              {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
               "arguments": calls[0].arguments},
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"}]
    second = c.responses.create(model=model, input=follow, tools=[TOOL])
    assert second.output_text == "tool said: sunny, 21C"


def test_responses_refuses_what_it_cannot_serve(router: FastrouteProcess) -> None:
    c = client(router)
    with pytest.raises(openai.BadRequestError, match="Previous response with id 'resp_123' not found"):
        c.responses.create(model="echo", input="hi", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError, match="tool type 'local_shell' is not supported"):
        c.responses.create(model="echo", input="hi", tools=[{"type": "local_shell"}])
    with pytest.raises(openai.BadRequestError, match="input: expected a non-empty array, got an empty one"):
        c.responses.create(model="echo", input=[])


def test_responses_cut_stream_fails_explicitly(router: FastrouteProcess) -> None:
    with httpx.stream("POST", f"{router.url}/v1/responses", timeout=30,
                      json={"model": "stub-cut", "input": "hello big world", "stream": True}) as resp:
        raw = resp.read().decode()
    kinds = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    events = list(client(router).responses.create(model="stub-cut", input="hello big world", stream=True))
    assert events[-1].type == "response.failed" and "provider 'stub'" in events[-1].response.error.message
