"""The field map over the wire: a real fastroute between the official SDKs and the stub upstream,
which records what each provider format received."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import FastrouteProcess, logging_to, start_router
from tests.stub_upstream import StubUpstream

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
USER = [{"role": "user", "content": "hello big world"}]


def claude(router: FastrouteProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=router.url, api_key="client-key", max_retries=0, timeout=30)


def gpt(router: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="client-key", max_retries=0, timeout=30)


def captured(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_claude_code_request_passes_to_an_anthropic_provider_untouched(router: FastrouteProcess,
                                                                       fresh_stub: StubUpstream) -> None:
    capture = captured("claude_code_2.1.197_first.json")
    body = {**capture["body"], "model": "a/stub-model", "stream": False}
    resp = httpx.post(f"{router.url}{capture['path']}", json=body, timeout=30,
                      headers={**capture["headers"], "x-api-key": "client-key"})
    assert resp.status_code == 200, resp.text
    sent = fresh_stub.requests[-1]
    assert (sent.path, sent.query) == ("/v1/messages", "beta=true")
    assert sent.body == {**body, "model": "a/stub-model"}  # role 'system' message, thinking, context_management...
    assert sent.headers["anthropic-beta"] == capture["headers"]["anthropic-beta"]
    assert resp.json()["type"] == "message"


@pytest.mark.parametrize("model, fmt", [("stub-model", "openai"), ("o/stub-llama", "ollama")])
def test_claude_code_request_reaches_other_formats_with_its_system_message_in_place(
        router: FastrouteProcess, fresh_stub: StubUpstream, model: str, fmt: str) -> None:
    capture = captured("claude_code_2.1.197_first.json")
    body = {**capture["body"], "model": model}
    with httpx.stream("POST", f"{router.url}{capture['path']}", json=body, timeout=30,
                      headers={**capture["headers"], "x-api-key": "client-key"}) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("event: ")]
    assert resp.status_code == 200
    assert events[0] == "event: message_start" and events[-1] == "event: message_stop"
    sent = fresh_stub.requests[-1].body
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "system"]
    assert sent["messages"][2]["content"] == capture["body"]["messages"][1]["content"]
    # not reasoning models by name: the effort and thinking fields they would refuse are not sent
    assert not {"reasoning_effort", "think"} & set(sent)


def test_top_k_reaches_ollama_and_openai_format_providers(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    for model in ("o/stub-llama", "stub-model"):
        claude(router).messages.create(model=model, max_tokens=50, messages=USER,
                                 extra_body={"top_k": 9, "temperature": 0.3})
    to_ollama, to_openai = (r.body for r in fresh_stub.requests[-2:])
    assert to_ollama["options"]["top_k"] == 9 and to_ollama["options"]["temperature"] == 0.3
    assert to_openai["top_k"] == 9


def test_n_above_one_is_a_clear_400_where_one_answer_comes_back(router: FastrouteProcess,
                                                                fresh_stub: StubUpstream) -> None:
    with pytest.raises(openai.BadRequestError, match="'n': 2 answers"):
        gpt(router).chat.completions.create(model="a/stub-model", messages=USER, n=2)
    gpt(router).chat.completions.create(model="stub-model", messages=USER, n=2)  # same format: passed on
    assert fresh_stub.requests[-1].body["n"] == 2


def test_a_field_with_no_counterpart_is_refused_naming_it(router: FastrouteProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="'logit_bias': no counterpart in the anthropic format"):
        gpt(router).chat.completions.create(model="a/stub-model", messages=USER, logit_bias={"1": 5})


@pytest.mark.parametrize("stream", [False, True])
def test_responses_namespaced_tool_call_comes_back_under_its_namespace(router: FastrouteProcess,
                                                                      fresh_stub: StubUpstream, stream: bool) -> None:
    tools = [{"type": "namespace", "name": "weather", "description": "weather tools", "tools": [
                {"type": "function", "name": "lookup", "description": "weather in a city", "strict": True,
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"], "additionalProperties": False}}]},
             {"type": "web_search", "external_web_access": False}]
    raw = gpt(router).responses.with_raw_response.create(model="stub-model", input="weather?", tools=tools,
                                                         store=False, include=["reasoning.encrypted_content"],
                                                         reasoning={"summary": "auto"}, stream=stream)
    assert raw.headers["x-router-omitted-tools"] == "web_search"
    parsed = raw.parse()
    if stream:
        final = [e for e in parsed if e.type == "response.completed"][0].response
    else:
        final = parsed
    call = [item for item in final.output if item.type == "function_call"][0]
    assert (call.name, call.namespace) == ("lookup", "weather")
    upstream_tool = fresh_stub.requests[-1].body["tools"]
    assert upstream_tool == [{"type": "function", "function": {
        "name": "weather__lookup", "description": "weather in a city", "strict": True,
        "parameters": tools[0]["tools"][0]["parameters"]}}]


def test_codex_first_request_is_served_by_every_format(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    capture = captured("codex_0.171.0_first.json")
    for model in ("stub-model", "a/stub-model", "o/stub-llama", "echo"):
        body = {**copy.deepcopy(capture["body"]), "model": model}
        with httpx.stream("POST", f"{router.url}/v1/responses", json=body, timeout=30,
                          headers={"authorization": "Bearer client-key"}) as resp:
            kinds = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
        assert resp.status_code == 200, model
        assert resp.headers["x-router-omitted-tools"] == "web_search"
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed", (model, kinds[-3:])


def test_a_refused_body_is_logged_with_the_model_and_stream_it_asked_for(stub: StubUpstream, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    proc = start_router(tmp_path, stub, extra=logging_to(log))
    try:
        bad = {"model": "a/stub-model", "stream": True, "max_tokens": 10,
               "messages": [{"role": "tool", "content": "not a role Anthropic has"}]}
        resp = httpx.post(f"{proc.url}/v1/messages", json=bad, timeout=10)
        assert resp.status_code == 400
        assert resp.json()["error"] == {"type": "invalid_request_error",
                                        "message": "messages.0.role: Input should be 'user', 'assistant' or 'system'"}
    finally:
        assert proc.stop() == 0
    entry = orjson.loads(log.read_text().splitlines()[-1])
    assert (entry["requested_model"], entry["stream"], entry["status"]) == ("a/stub-model", True, 400)


def test_omitted_hosted_tools_are_in_the_request_log(stub: StubUpstream, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    proc = start_router(tmp_path, stub, extra=logging_to(log))
    try:
        resp = httpx.post(f"{proc.url}/v1/responses", timeout=10, json={
            "model": "echo", "input": "hi", "tools": [{"type": "web_search"}, {"type": "code_interpreter"}]})
        assert resp.status_code == 200 and resp.headers["x-router-omitted-tools"] == "code_interpreter,web_search"
    finally:
        assert proc.stop() == 0
    assert orjson.loads(log.read_text().splitlines()[-1])["omitted_tools"] == ["code_interpreter", "web_search"]
    assert "cannot run the hosted tool(s) code_interpreter, web_search" in proc.output


def test_an_odd_upstream_event_ends_a_translated_stream_with_an_error(stub: StubUpstream, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    proc = start_router(tmp_path, stub, extra=logging_to(log))
    try:
        body = {"model": "stub-odd-event", "max_tokens": 50, "stream": True, "messages": USER}
        with httpx.stream("POST", f"{proc.url}/v1/messages", json=body, timeout=30) as resp:
            lines = list(resp.iter_lines())
        events = [line[7:] for line in lines if line.startswith("event: ")]
        assert events[-1] == "error" and "message_stop" not in events  # never a clean end
        assert "sent a stream event fastroute cannot read" in lines[-2]
        # passed through (same dialect): the bytes go on as the upstream sent them; the log says it
        body = {"model": "stub-odd-event", "stream": True, "messages": USER}
        with httpx.stream("POST", f"{proc.url}/v1/chat/completions", json=body, timeout=30) as resp:
            raw = resp.read()
        assert b'"choices":[null]' in raw and raw.endswith(b"data: [DONE]\n\n")
    finally:
        assert proc.stop() == 0
    entries = [orjson.loads(line) for line in log.read_text().splitlines()]
    assert [e["dialect"] for e in entries] == ["anthropic", "openai"]
    assert all("sent a stream event fastroute cannot read" in (e["error"] or "") for e in entries)
    assert entries[0]["status"] == 502


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", lambda m: {"model": m, "messages": USER}),
    ("/v1/messages", lambda m: {"model": m, "max_tokens": 10, "messages": USER}),
    ("/v1/responses", lambda m: {"model": m, "input": "hi"}),
    ("/api/chat", lambda m: {"model": m, "messages": USER, "stream": False}),
    ("/v1/messages/count_tokens", lambda m: {"model": m, "messages": USER}),
])
def test_model_names_are_checked_or_encoded_before_they_reach_a_header(router: FastrouteProcess, path: str,
                                                                       body) -> None:
    for bad, why in (("echo\r\nx-injected: 1", "control characters"), ("echo" + "x" * 70000, "at most 256")):
        resp = httpx.post(f"{router.url}{path}", json=body(bad), timeout=30)
        assert resp.status_code == 400 and why in resp.text, (path, resp.text[:200])
        assert "x-injected" not in resp.headers
    # a name in another script is a fine name: routed (echo answers anything under its prefix), header encoded
    resp = httpx.post(f"{router.url}{path}", json=body("echo-模型"), timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["x-router-model"] == "echo-%E6%A8%A1%E5%9E%8B"
