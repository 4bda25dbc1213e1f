"""Recorded requests of real coding agents, replayed through a real fastroute to each provider format.

``tests/fixtures/agents/`` holds Claude Code's and Codex's first request of a session and the
second (carrying a shell tool's result), as the CLIs sent them.  Each goes through fastroute
to an upstream of each format (``tests/agent_stub.py``), streamed as captured and with
``stream: false``.  The client must get a 200 in its own dialect with the upstream's answer,
and the upstream a body in its own format with nothing lost that matters: Claude Code's
mid-conversation ``role: system`` message in place, every tool, tool calls and results paired;
Codex's namespace tools flattened to ``<namespace>__<tool>``, its hosted ``web_search`` left
out and named in ``x-router-omitted-tools``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.agent_stub import (
    AgentStub, Recorded, last_tool_calls, last_tool_results, router_config, text_of, tool_schemas,
)
from tests.conftest import FastrouteProcess

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
PROVIDER_FORMATS = ("openai", "anthropic", "ollama")
UPSTREAM_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
#: what the captured shell call ran (the capture server asked for ``echo <this>``)
CAPTURED_NONCE = "fastroute-fixture-4b1d"
REPLAY_NONCE = "fastroute-replay-nonce"


@dataclass(frozen=True)
class Fixture:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def agent(self) -> str:
        return "claude" if self.name.startswith("claude_code") else "codex"

    @property
    def tool_result_turn(self) -> bool:
        return self.name.endswith("_second")


def load(name: str) -> Fixture:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return Fixture(name, data["method"], data["path"], data["headers"], data["body"])


FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def test_the_fixtures_cover_both_clients_and_both_turns() -> None:
    assert FIXTURE_NAMES == ["claude_code_2.1.197_first", "claude_code_2.1.197_second",
                             "codex_0.171.0_first", "codex_0.171.0_second"]


@pytest.fixture(scope="module", params=PROVIDER_FORMATS)
def upstream(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AgentStub, FastrouteProcess]]:
    """(provider format, the stub, a fastroute routing both agents' models to the stub in that format)."""
    tmp = tmp_path_factory.mktemp(f"replay-{request.param}")
    with AgentStub(REPLAY_NONCE) as stub:
        config = tmp / "fastroute.toml"
        config.write_text(router_config(stub, request.param, tmp / "requests.jsonl"))
        router = FastrouteProcess([str(config)]).start()
        yield request.param, stub, router
        router.stop()


# ── the answer, read in the client's dialect ──────────────────────────────

def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for frame in text.split("\n\n"):
        data = [line[len("data:"):].strip() for line in frame.splitlines() if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def anthropic_answer(resp: httpx.Response, stream: bool) -> tuple[str, list[tuple[str, Any]]]:
    """(text, [(tool, input)]) of a Messages answer."""
    if not stream:
        body = resp.json()
        assert body["type"] == "message", body
        blocks = body["content"]
    else:
        events = sse_events(resp.text)
        assert (events[0]["type"], events[-1]["type"]) == ("message_start", "message_stop"), events
        blocks, partial = [], {}
        for e in events:
            if e["type"] == "content_block_start":
                blocks.append(dict(e["content_block"]))
            elif e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta":
                blocks[e["index"]]["text"] += e["delta"]["text"]
            elif e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta":
                partial[e["index"]] = partial.get(e["index"], "") + e["delta"]["partial_json"]
        for i, raw in partial.items():
            blocks[i]["input"] = json.loads(raw)
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    return text, [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]


def responses_answer(resp: httpx.Response, stream: bool) -> tuple[str, list[tuple[str, Any]]]:
    """(text, [(tool, arguments)]) of a Responses answer."""
    if not stream:
        body = resp.json()
    else:
        events = sse_events(resp.text)
        assert (events[0]["type"], events[-1]["type"]) == ("response.created", "response.completed"), events
        body = events[-1]["response"]
    assert (body["object"], body["status"]) == ("response", "completed"), body
    text = "".join(p["text"] for item in body["output"] if item["type"] == "message"
                   for p in item["content"] if p["type"] == "output_text")
    calls = [(i["name"], json.loads(i["arguments"])) for i in body["output"] if i["type"] == "function_call"]
    return text, calls


def replay(router: FastrouteProcess, stub: AgentStub, fixture: Fixture,
           stream: bool) -> tuple[httpx.Response, dict[str, Any], Recorded]:
    body = {**fixture.body, "stream": stream}
    auth = {"x-api-key": "sk-replay"} if fixture.agent == "claude" else {"authorization": "Bearer sk-replay"}
    before = len(stub.requests)
    resp = httpx.request(fixture.method, router.url + fixture.path, headers={**fixture.headers, **auth},
                         content=orjson.dumps(body), timeout=30)
    assert resp.status_code == 200, resp.text
    arrived = stub.requests[before:]
    assert len(arrived) == 1, [r.path for r in arrived]
    return resp, body, arrived[0]


def streams(provider_format: str, body: dict[str, Any]) -> bool:
    """Whether an upstream body asks for a stream (Ollama streams unless told not to)."""
    return body.get("stream", provider_format == "ollama") is True


def expected_tools(fixture: Fixture) -> dict[str, Any]:
    """The function tools the upstream should be offered: name -> schema (namespaces flattened)."""
    if fixture.agent == "claude":
        return {t["name"]: t["input_schema"] for t in fixture.body["tools"]}
    tools = {}
    for t in fixture.body["tools"]:
        if t["type"] == "function":
            tools[t["name"]] = t["parameters"]
        elif t["type"] == "namespace":
            tools |= {f"{t['name']}__{inner['name']}": inner["parameters"] for inner in t["tools"]}
    return tools


# ── the cases ─────────────────────────────────────────────────────────────

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_agent_request_replayed_to_each_provider_format(upstream: tuple[str, AgentStub, FastrouteProcess],
                                                        name: str, stream: bool) -> None:
    provider_format, stub, router = upstream
    fixture = load(name)
    resp, sent, got = replay(router, stub, fixture, stream)

    # upstream: its own format, everything that matters carried
    assert got.path == UPSTREAM_PATHS[provider_format]
    assert streams(provider_format, got.body) == stream
    assert tool_schemas(provider_format, got.body) == expected_tools(fixture)
    if fixture.agent == "claude":
        check_claude_upstream(provider_format, fixture, sent, got)
    else:
        check_codex_upstream(provider_format, sent, got)
    if fixture.tool_result_turn:
        check_tool_turn(provider_format, fixture, got)

    # client: a 200 in its own dialect, carrying what the upstream answered
    reply = got.reply
    assert reply is not None
    assert (reply.tool is None) == fixture.tool_result_turn, reply  # the stub calls the shell until it has a result
    read = anthropic_answer if fixture.agent == "claude" else responses_answer
    want = [(reply.tool, reply.arguments)] if reply.tool else []
    assert read(resp, stream) == (reply.text, want)
    omitted = resp.headers.get("x-router-omitted-tools")
    assert omitted == (None if fixture.agent == "claude" else "web_search")


def check_claude_upstream(provider_format: str, fixture: Fixture, sent: dict[str, Any], got: Recorded) -> None:
    """Claude Code's mid-conversation ``role: system`` message stays where it was."""
    at = next(i for i, m in enumerate(sent["messages"]) if m["role"] == "system")
    if provider_format == "anthropic":  # same dialect: passed on untouched, beta features included
        assert got.body == sent
        assert got.headers["anthropic-beta"] == fixture.headers["anthropic-beta"]
        return
    messages = got.body["messages"]
    # the top-level system prompt, first, but for Claude Code's per-session billing line (a hint)
    system_blocks = [b["text"] for b in sent["system"] if not b["text"].startswith("x-anthropic-billing-header:")]
    assert len(system_blocks) == len(sent["system"]) - 1
    assert messages[0]["role"] == "system"
    assert all(text in messages[0]["content"] for text in system_blocks), messages[0]["content"][:500]
    assert "x-anthropic-billing-header" not in messages[0]["content"]
    # then the conversation, one upstream message for each of Claude Code's (tool results: one each)
    assert messages[1 + at] == {"role": "system", "content": sent["messages"][at]["content"]}
    assert [m["role"] for m in messages[1:]] == upstream_roles(sent["messages"])


def upstream_roles(messages: list[dict[str, Any]]) -> list[str]:
    """The roles an Anthropic conversation has in OpenAI/Ollama form."""
    roles: list[str] = []
    for m in messages:
        blocks = m["content"] if isinstance(m["content"], list) else []
        results = [b for b in blocks if b.get("type") == "tool_result"]
        roles += ["tool"] * len(results) if results and len(results) == len(blocks) else [m["role"]]
    return roles


def check_codex_upstream(provider_format: str, sent: dict[str, Any], got: Recorded) -> None:
    """Codex's developer instructions reach the upstream as its system prompt, the user's words as theirs."""
    developer = [text_of(i["content"]) for i in sent["input"] if i.get("role") == "developer"]
    if provider_format == "anthropic":
        system = text_of(got.body["system"])
    else:
        system = "".join(text_of(m["content"]) for m in got.body["messages"] if m["role"] == "system")
    assert developer and all(text in system for text in developer)
    said = [text_of(i["content"]) for i in sent["input"] if i.get("role") == "user"]
    users = [text_of(m["content"]) for m in got.body["messages"] if m["role"] == "user"]
    assert all(any(text in u for u in users) for text in said), users


def check_tool_turn(provider_format: str, fixture: Fixture, got: Recorded) -> None:
    """The shell call and its result, paired, in the upstream's own format."""
    if fixture.agent == "claude":
        call_id, tool, arguments = "toolu_capture1", "Bash", {"command": f"echo {CAPTURED_NONCE}",
                                                              "description": "Print the nonce"}
    else:
        call_id, tool, arguments = "call_capture1", "exec_command", {"cmd": f"echo {CAPTURED_NONCE}"}
    messages = got.body["messages"]
    calls = last_tool_calls(provider_format, messages)
    if provider_format == "ollama":  # Ollama's calls carry no id: results name the tool instead
        assert [(name, args) for _, name, args in calls] == [(tool, arguments)]
    else:
        assert calls == [(call_id, tool, arguments)]
    results = last_tool_results(provider_format, messages)
    assert [ref for ref, _ in results] == [tool if provider_format == "ollama" else call_id]
    assert CAPTURED_NONCE in results[0][1].splitlines(), results
