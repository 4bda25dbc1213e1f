"""The field map, pair by pair: each client dialect's field parsed, fitted for a provider, and
rendered in that provider's format — mapped, passed (same dialect) or refused, never dropped.

In process, with the real parsers, the real ``fit`` and the real provider classes (no network:
nothing is sent); the wire-level behaviour is tested through a real fastroute elsewhere.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastroute.canonical import StreamEvent, ToolCall, own_call
from fastroute.config import ProviderConfig
from fastroute.errors import BadRequest
from fastroute.formats import anthropic, ollama, openai, responses
from fastroute.providers import PROVIDER_CLASSES
from fastroute.providers.fit import fit

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
CLIENTS = {"openai": openai, "anthropic": anthropic, "responses": responses, "ollama": ollama}
FORMATS = ("openai", "anthropic", "ollama")


def provider(fmt: str, capabilities: tuple[str, ...] = ()) -> Any:
    return PROVIDER_CLASSES[fmt](ProviderConfig(name=f"p-{fmt}", format=fmt, base_url="http://127.0.0.1:9",
                                                capabilities=capabilities), None)


def upstream(client: str, body: dict[str, Any], fmt: str, model: str = "m",
             capabilities: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """(what a provider of ``fmt`` would receive, the hosted tools left out)."""
    p = provider(fmt, capabilities)
    fitted = fit(CLIENTS[client].parse_request(copy.deepcopy(body)), p, model)
    fitted.request.model = model
    return p.dialect.render_request(fitted.request, stream=False), fitted.omitted


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())["body"]


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ── Claude Code's first request, every provider format ──────────────────────

@pytest.mark.parametrize("fmt", FORMATS)
def test_claude_code_system_message_keeps_its_place(fmt: str) -> None:
    body = fixture("claude_code_2.1.197_first.json")
    mid = body["messages"][1]
    assert mid["role"] == "system"  # the fixture is what Claude Code really sends
    sent, omitted = upstream("anthropic", body, fmt, "claude-opus-4-8")
    assert omitted == []
    assert len(sent["tools"]) == 24 and "Bash" in [t.get("name") or t["function"]["name"] for t in sent["tools"]]
    if fmt == "anthropic":  # rendered from canonical for a client of this dialect: still a system message
        assert sent["messages"][-1] == {"role": "system", "content": mid["content"]}
    else:  # OpenAI and Ollama: a system message in place, after the leading system prompt and the user turn
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "system"]
        assert sent["messages"][2]["content"] == mid["content"]
        # Claude Code's per-session billing line is Anthropic's, not the model's: a local prefix cache keeps working
        assert sent["messages"][0]["content"].startswith("You are a Claude agent")
        assert "x-anthropic-billing-header" not in json.dumps(sent)


def test_mid_conversation_system_from_another_dialect_reaches_anthropic_in_the_user_turn() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "first"},
                                       {"role": "assistant", "content": "ok"},
                                       {"role": "system", "content": "now be terse"},
                                       {"role": "user", "content": "second"}]}
    sent, _ = upstream("openai", body, "anthropic")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    texts = [b["text"] for b in sent["messages"][2]["content"]]
    assert texts == ["<system-reminder>\nnow be terse\n</system-reminder>", "second"]


def test_a_tool_result_leads_its_user_turn_when_a_system_message_comes_first() -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "system", "content": "reminder"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]}
    sent, _ = upstream("openai", body, "anthropic")
    last = sent["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]


@pytest.mark.parametrize("fmt, model, capabilities, expected", [
    ("openai", "o3", (), {"reasoning_effort": "high"}),
    ("openai", "gpt-4o", (), {}),                                 # not a reasoning model: it would refuse the field
    ("openai", "my-local", ("reasoning",), {"reasoning_effort": "high"}),  # declared
    ("openai", "o3", ("tools",), {}),                             # declared without reasoning wins over the name
    ("ollama", "qwen3:8b", (), {"think": True}),                  # a level only for gpt-oss
    ("ollama", "gpt-oss:20b", (), {"think": "high"}),
    ("ollama", "llama3.1:8b", (), {}),
    ("anthropic", "claude-opus-4-8", (), {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}),
    ("anthropic", "claude-3-5-haiku", (), {}),
])
def test_reasoning_settings_reach_only_models_that_take_them(fmt: str, model: str, capabilities: tuple[str, ...],
                                                            expected: dict[str, Any]) -> None:
    sent, _ = upstream("anthropic", fixture("claude_code_2.1.197_first.json"), fmt, model, capabilities)
    got = {k: sent[k] for k in ("reasoning_effort", "think", "thinking", "output_config") if k in sent}
    assert got == expected


# ── Codex's first request: namespaces flattened, hosted tools left out ─────

@pytest.mark.parametrize("fmt", FORMATS)
def test_codex_namespace_tools_flatten_and_web_search_is_left_out(fmt: str) -> None:
    body = fixture("codex_0.171.0_first.json")
    namespace = next(t for t in body["tools"] if t["type"] == "namespace")
    sent, omitted = upstream("responses", body, fmt, "gpt-5-codex")
    names = [t.get("name") or t["function"]["name"] for t in sent["tools"]]
    assert omitted == ["web_search"]
    for inner in namespace["tools"]:
        assert f"{namespace['name']}__{inner['name']}" in names
    assert "exec_command" in names and len(names) == len(body["tools"]) - 2 + len(namespace["tools"])
    assert all(json.dumps(t).find("web_search") < 0 for t in sent["tools"])


def test_namespaced_calls_go_back_under_their_namespace() -> None:
    body = fixture("codex_0.171.0_first.json")
    request = responses.parse_request(copy.deepcopy(body))
    names = request.flat_tool_names()
    call = ToolCall("call_1", "multi_agent_v1__spawn_agent", '{"task":"x"}')
    own_call(names, call)
    item = orjson.loads(responses.render_response(_answer(call)))["output"][-1]
    assert (item["type"], item["name"], item["namespace"]) == ("function_call", "spawn_agent", "multi_agent_v1")
    # streamed: the item added and done carry the namespace too
    stream = _stream(call)
    added = [e for e in stream if e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call"]
    assert added[0]["item"]["namespace"] == "multi_agent_v1" and added[0]["item"]["name"] == "spawn_agent"
    # and the history the client sends back is flattened again for the provider
    follow = {**body, "input": [*body["input"], {"type": "function_call", "call_id": "call_1", "name": "spawn_agent",
                                                 "namespace": "multi_agent_v1", "arguments": "{}"},
                                {"type": "function_call_output", "call_id": "call_1", "output": "spawned"}]}
    sent, _ = upstream("responses", follow, "openai")
    calls = [m for m in sent["messages"] if m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__spawn_agent"


def test_custom_tools_are_functions_upstream_and_custom_calls_back() -> None:
    body = {"model": "m", "input": "patch it",
            "tools": [{"type": "custom", "name": "apply_patch", "description": "apply a patch",
                       "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}]}
    sent, _ = upstream("responses", body, "openai")
    fn = sent["tools"][0]["function"]
    assert fn["name"] == "apply_patch" and fn["parameters"]["properties"] == {"input": {"type": "string"}}
    request = responses.parse_request(copy.deepcopy(body))
    call = ToolCall("call_9", "apply_patch", '{"input": "*** Begin Patch"}')
    own_call(request.flat_tool_names(), call)
    item = orjson.loads(responses.render_response(_answer(call)))["output"][-1]
    assert item == {"type": "custom_tool_call", "id": item["id"], "call_id": "call_9", "name": "apply_patch",
                    "input": "*** Begin Patch", "status": "completed"}
    done = [e for e in _stream(call) if e["type"] == "response.custom_tool_call_input.done"]
    assert done[0]["input"] == "*** Begin Patch"
    # the custom call and its output in the next turn reach the provider as a function call and a result
    follow = {**body, "input": [{"role": "user", "content": "patch it"},
                                {"type": "custom_tool_call", "call_id": "call_9", "name": "apply_patch",
                                 "input": "*** Begin Patch"},
                                {"type": "custom_tool_call_output", "call_id": "call_9", "output": "applied"}]}
    sent, _ = upstream("responses", follow, "anthropic")
    assert sent["messages"][1]["content"][0]["input"] == {"input": "*** Begin Patch"}
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"


def test_codex_hints_are_accepted_and_an_unknown_tool_type_is_refused() -> None:
    body = {"model": "m", "input": "hi", "store": False, "include": ["reasoning.encrypted_content"],
            "reasoning": {"summary": "auto", "effort": "low"}, "parallel_tool_calls": True,
            "prompt_cache_key": "k1", "text": {"verbosity": "low"}, "client_metadata": {"turn": 1}}
    sent, _ = upstream("responses", body, "openai", "gpt-5")
    assert (sent["reasoning_effort"], sent["verbosity"], sent["prompt_cache_key"]) == ("low", "low", "k1")
    for fmt in ("anthropic", "ollama"):
        upstream("responses", body, fmt)  # served: the hints have no counterpart there and change nothing
    with pytest.raises(BadRequest, match="tool type 'local_shell'"):
        upstream("responses", {**body, "tools": [{"type": "local_shell"}]}, "openai")


# ── point 4: fields that fell on the floor between dialects ────────────────

def test_top_k_reaches_every_provider_that_takes_it() -> None:
    assert upstream("anthropic", {"model": "m", "messages": user(), "top_k": 7}, "ollama")[0]["options"]["top_k"] == 7
    assert upstream("anthropic", {"model": "m", "messages": user(), "top_k": 7}, "openai")[0]["top_k"] == 7
    assert upstream("ollama", {"model": "m", "messages": user(), "options": {"top_k": 5}}, "anthropic")[0]["top_k"] == 5
    assert upstream("openai", {"model": "m", "messages": user(), "top_k": 3}, "anthropic")[0]["top_k"] == 3
    assert upstream("openai", {"model": "m", "messages": user(), "top_k": 3}, "ollama")[0]["options"]["top_k"] == 3


def test_other_sampling_fields_are_mapped() -> None:
    body = {"model": "m", "messages": user(), "frequency_penalty": 0.5, "presence_penalty": 0.25, "min_p": 0.05,
            "repetition_penalty": 1.1, "seed": 4}
    options = upstream("openai", body, "ollama")[0]["options"]
    assert options == {"frequency_penalty": 0.5, "presence_penalty": 0.25, "min_p": 0.05, "repeat_penalty": 1.1,
                       "seed": 4}
    back = upstream("ollama", {"model": "m", "messages": user(), "options": {
        "repeat_penalty": 1.2, "presence_penalty": 0.1, "num_ctx": 8192}}, "openai")[0]
    assert (back["repetition_penalty"], back["presence_penalty"]) == (1.2, 0.1) and "num_ctx" not in json.dumps(back)


def test_a_sampling_field_a_format_lacks_is_refused_unless_it_changes_nothing() -> None:
    body = {"model": "m", "messages": user(), "frequency_penalty": 0.5}
    with pytest.raises(BadRequest, match="'frequency_penalty': no counterpart in the anthropic format"):
        upstream("openai", body, "anthropic")
    with pytest.raises(BadRequest, match="'min_p': no counterpart in the anthropic format"):
        upstream("ollama", {"model": "m", "messages": user(), "options": {"min_p": 0.1}}, "anthropic")
    neutral = {"model": "m", "messages": user(), "frequency_penalty": 0, "presence_penalty": 0.0}
    assert not {"frequency_penalty", "presence_penalty"} & set(upstream("openai", neutral, "anthropic")[0])


def test_an_ollama_option_with_no_counterpart_is_refused_elsewhere_and_passed_to_ollama() -> None:
    body = {"model": "m", "messages": user(), "options": {"mirostat": 2, "top_k": 4}}
    with pytest.raises(BadRequest, match="'options.mirostat'"):
        upstream("ollama", body, "openai")
    assert upstream("ollama", body, "ollama")[0]["options"] == {"top_k": 4, "mirostat": 2}


def test_strict_survives_responses_to_chat_and_to_anthropic() -> None:
    tool = {"type": "function", "name": "f", "strict": True, "parameters": {"type": "object", "properties": {}}}
    chat, _ = upstream("responses", {"model": "m", "input": "x", "tools": [tool]}, "openai")
    assert chat["tools"][0]["function"]["strict"] is True
    claude, _ = upstream("responses", {"model": "m", "input": "x", "tools": [tool]}, "anthropic")
    assert claude["tools"][0]["strict"] is True
    openai_tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": tool["parameters"]}}
    assert upstream("openai", {"model": "m", "messages": user(), "tools": [openai_tool]},
                    "anthropic")[0]["tools"][0]["strict"] is True


@pytest.mark.parametrize("client, body", [
    ("openai", {"model": "m", "messages": user(), "response_format": {"type": "json_object"}}),
    ("responses", {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}),
])
def test_json_object_is_ollama_json_and_back(client: str, body: dict[str, Any]) -> None:
    assert upstream(client, body, "ollama")[0]["format"] == "json"
    assert upstream(client, body, "openai")[0]["response_format"] == {"type": "json_object"}
    with pytest.raises(BadRequest, match="no plain JSON mode"):
        upstream(client, body, "anthropic")


def test_ollama_json_is_json_object_not_a_schema() -> None:
    sent, _ = upstream("ollama", {"model": "m", "messages": user(), "format": "json"}, "openai")
    assert sent["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    sent, _ = upstream("ollama", {"model": "m", "messages": user(), "format": schema}, "openai")
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_an_image_in_a_tool_result_reaches_an_openai_provider() -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": "screenshot please"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": [
            {"type": "text", "text": "here"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}]}
    sent, _ = upstream("anthropic", body, "openai")
    tool, picture = sent["messages"][-2:]
    assert tool == {"role": "tool", "tool_call_id": "tu1", "content": "here"}
    assert picture["role"] == "user"
    assert picture["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert upstream("anthropic", body, "ollama")[0]["messages"][-1]["images"] == ["iVBORw0KGgo="]


@pytest.mark.parametrize("fmt", FORMATS)
def test_n_above_one_is_refused_where_translation_carries_one_answer(fmt: str) -> None:
    with pytest.raises(BadRequest, match="'n': 2 answers"):
        upstream("openai", {"model": "m", "messages": user(), "n": 2}, fmt)
    upstream("openai", {"model": "m", "messages": user(), "n": 1}, fmt)


@pytest.mark.parametrize("client, body, field", [
    ("openai", {"model": "m", "messages": user(), "logit_bias": {"50256": -100}}, "logit_bias"),
    ("anthropic", {"model": "m", "messages": user(), "container": "c1"}, "container"),
    ("responses", {"model": "m", "input": "x", "max_tool_calls": 3}, "max_tool_calls"),
])
def test_a_field_without_counterpart_is_refused_by_others_and_passed_to_its_own(client: str, body: dict[str, Any],
                                                                               field: str) -> None:
    for fmt in FORMATS:
        if fmt == client:
            assert upstream(client, body, fmt)[0][field] == body[field]
        else:
            with pytest.raises(BadRequest, match=f"'{field}': no counterpart"):
                upstream(client, body, fmt)


@pytest.mark.parametrize("client, body", [
    ("openai", {"model": "m", "messages": user(), "user": "u1", "metadata": {"a": "b"}, "store": True,
                "service_tier": "auto", "stream_options": {"include_usage": True}}),
    ("anthropic", {"model": "m", "messages": user(), "metadata": {"user_id": "u"}, "service_tier": "auto",
                   "context_management": {"edits": []}}),
    ("ollama", {"model": "m", "messages": user(), "keep_alive": "5m", "options": {"num_ctx": 4096}}),
])
def test_hints_are_left_out_without_a_refusal(client: str, body: dict[str, Any]) -> None:
    for fmt in FORMATS:
        if fmt != client:
            sent, _ = upstream(client, body, fmt)
            assert not {"user", "metadata", "store", "service_tier", "context_management", "keep_alive"} & set(sent)


def test_anthropic_server_tools_are_left_out_for_others_and_kept_for_anthropic() -> None:
    body = {"model": "m", "messages": user(), "tools": [
        {"name": "f", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    sent, omitted = upstream("anthropic", body, "openai")
    assert omitted == ["web_search_20250305"] and len(sent["tools"]) == 1
    sent, omitted = upstream("anthropic", body, "anthropic")
    assert omitted == [] and sent["tools"][1]["type"] == "web_search_20250305"
    with pytest.raises(BadRequest, match="bash_20250124"):
        upstream("anthropic", {**body, "tools": [{"type": "bash_20250124", "name": "bash"}]}, "openai")


# ── Anthropic's own wording for what fastroute refuses ──────────────────────

@pytest.mark.parametrize("body, message", [
    ({"messages": user()}, "model: Field required"),
    ({"model": "m"}, "messages: Field required"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]},
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    ({"model": "m", "messages": user(), "max_tokens": "many"}, "max_tokens: Input should be a valid integer"),
])
def test_anthropic_refusals_are_worded_as_anthropic_words_them(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        anthropic.check_request(body)
    assert err.value.message == message
    assert orjson.loads(anthropic.error_body(err.value)) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": message}}


# ── helpers ─────────────────────────────────────────────────────────────────

def _answer(call: ToolCall) -> Any:
    from fastroute.canonical import ChatResponse

    return ChatResponse(id="r1", model="m", tool_calls=[call], stop_reason="tool_calls")


def _stream(call: ToolCall) -> list[dict[str, Any]]:
    renderer = responses.StreamRenderer()
    raw = renderer.render(StreamEvent("start", id="r1", model="m"))
    raw += renderer.render(StreamEvent("tool_call", index=0, tool_call=ToolCall(call.id, call.name, "", call.namespace,
                                                                                call.kind)))
    raw += renderer.render(StreamEvent("tool_args", index=0, text=call.arguments))
    raw += renderer.render(StreamEvent("stop", stop_reason="tool_calls")) + renderer.end()
    return [orjson.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
