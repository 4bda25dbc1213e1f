"""The Vercel AI SDK's default model through a real fastroute, to an upstream of each provider format.

``createOpenAI({baseURL, apiKey})(id)`` speaks the OpenAI Responses API and keeps OpenAI's
defaults: ``store`` unset (true), so on every follow-up it refers to the assistant's earlier
text by id (``{"type": "item_reference", "id": "msg_…"}``) instead of sending it again.
The scripts in ``tests/js/`` run the real SDK (pinned in ``tests/js/package.json``) with
nothing changed but the base URL and a key:

- ``multi_turn.mjs``: three turns, each ``messages: [...earlier, ...result.response.messages,
  {role: 'user', ...}]`` as the SDK documents, with ``generateText`` or ``streamText``;
- ``tool_loop.mjs``: one call with a ``weather`` tool and ``stopWhen: stepCountIs(3)``: the SDK
  runs the tool and sends its result back in the same call; with ``*-talk-then-tool`` the
  upstream writes a sentence before the call, which the SDK then refers to by id.

What a user notices: each call ends well, with the upstream's answer; and the upstream of
every follow-up receives the whole conversation so far, in its own format, with nothing lost.

Without ``node``, ``npm`` or ``tests/js/node_modules`` (``npm ci --prefix tests/js``) they skip,
unless ``FASTROUTE_REQUIRE_AGENTS=1`` (CI), where that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, ROOT, FastrouteProcess, stub_config
from tests.stub_dialects import PREAMBLE, TOOL_ARGS
from tests.stub_upstream import Recorded, StubUpstream

JS = ROOT / "tests" / "js"
SCRIPT_TIMEOUT_S = 60
PROVIDER_FORMATS = ("openai", "anthropic", "ollama")
UPSTREAM_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
#: the models of stub_config that reach the stub in each format
PLAIN_MODELS = {"openai": "stub-model", "anthropic": "a/stub-model", "ollama": "o/stub-llama"}
TALKING_MODELS = {"openai": "stub-talk-then-tool", "anthropic": "a/stub-talk-then-tool",
                  "ollama": "o/stub-talk-then-tool"}
#: how the upstream's tool call is referred to by its result: the stub's call ids, Ollama's tool name
CALL_REFS = {"openai": "call_stub1", "anthropic": "toolu_stub1", "ollama": "weather"}
#: what multi_turn.mjs asks, one question a turn, and tool_loop.mjs's one prompt
QUESTIONS = ["first question", "second question", "third question"]
WEATHER_PROMPT = "What is the weather in Paris?"
MODES = ("generate", "stream")


def require_sdk() -> None:
    """node, npm and the pinned SDK installed in tests/js, or skip (fail when CI requires them)."""
    reasons = [f"the {tool} command is not installed" for tool in ("node", "npm") if shutil.which(tool) is None]
    if not (JS / "node_modules").is_dir():
        reasons.append("tests/js/node_modules is absent")
    else:
        for name, version in json.loads((JS / "package.json").read_text())["dependencies"].items():
            manifest = JS / "node_modules" / name / "package.json"
            if not manifest.is_file():
                reasons.append(f"{name} is not installed in tests/js/node_modules")
            elif (installed := json.loads(manifest.read_text())["version"]) != version:
                reasons.append(f"tests/js/node_modules has {name} {installed}, package.json pins {version}")
    if reasons:
        reason = "; ".join(reasons) + " (.ci/run runs: npm ci --prefix tests/js --no-audit --no-fund)"
        if os.environ.get("FASTROUTE_REQUIRE_AGENTS") == "1":
            pytest.fail(f"{reason}, and FASTROUTE_REQUIRE_AGENTS=1")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sdk_router(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    require_sdk()
    tmp = tmp_path_factory.mktemp("vercel-ai-sdk")
    config = tmp / "fastroute.toml"
    config.write_text(stub_config(stub))
    # state fastroute keeps by default (the stored responses) goes under tmp, not the user's home
    env = {"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY, "XDG_DATA_HOME": str(tmp / "data")}
    proc = FastrouteProcess([str(config)], env=env).start()
    yield proc
    proc.stop()


def run_script(router: FastrouteProcess, script: str, model: str, mode: str, *extra: str) -> dict[str, Any]:
    """Run one of tests/js's scripts to its end; its one JSON line, which must say it went well."""
    cmd = ["node", str(JS / script), f"{router.url}/v1", model, mode, *extra]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(cmd, cwd=JS, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT_S)
    seen = f"{' '.join(cmd[1:])} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, seen
    out = json.loads(lines[0])
    assert done.returncode == 0, f"the SDK failed: {out.get('error')}\n{seen}"
    assert out["ok"] is True, seen
    return out


# ── what the upstream received, read in its own format ───────────────────

Part = tuple[Any, ...]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") == "text")


def _openai_parts(m: dict[str, Any]) -> list[Part]:
    if m["role"] == "tool":
        return [("result", m.get("tool_call_id"), _text(m["content"]))]
    content = m.get("content")
    parts: list[Part] = []
    if isinstance(content, list):
        parts += [("text", p["text"]) if p.get("type") == "text" else ("other", p) for p in content]
    elif content:
        parts.append(("text", content))
    for call in m.get("tool_calls") or []:
        parts.append(("call", call["id"], call["function"]["name"], json.loads(call["function"]["arguments"])))
    return parts


def _anthropic_parts(m: dict[str, Any]) -> list[Part]:
    if isinstance(m["content"], str):
        return [("text", m["content"])]
    parts: list[Part] = []
    for b in m["content"]:
        if b["type"] == "text":
            parts.append(("text", b["text"]))
        elif b["type"] == "tool_use":
            parts.append(("call", b["id"], b["name"], b["input"]))
        elif b["type"] == "tool_result":
            parts.append(("result", b["tool_use_id"], _text(b["content"])))
        else:
            parts.append(("other", b))
    return parts


def _ollama_parts(m: dict[str, Any]) -> list[Part]:
    if m["role"] == "tool":
        return [("result", m.get("tool_name"), m["content"])]
    parts: list[Part] = [("text", m["content"])] if m.get("content") else []
    parts += [("call", c["function"]["name"], c["function"]["name"], c["function"]["arguments"])
              for c in m.get("tool_calls") or []]
    return parts + [("other", key) for key in ("images", "thinking") if m.get(key)]


def conversation(provider_format: str, body: dict[str, Any]) -> list[tuple[str, list[Part]]]:
    """[(role, parts)] of an upstream request, the same shape for every format: parts are
    ("text", text), ("call", ref, tool, arguments), ("result", ref, text); a message of tool
    results has the role "tool"; anything else shows as ("other", …) so that it cannot pass."""
    read = {"openai": _openai_parts, "anthropic": _anthropic_parts, "ollama": _ollama_parts}[provider_format]
    out = [("system", [("text", _text(body["system"]))])] if body.get("system") else []
    for m in body["messages"]:
        parts = read(m)
        role = "tool" if parts and all(p[0] == "result" for p in parts) else m["role"]
        out.append((role, parts))
    return out


def offered_tools(provider_format: str, body: dict[str, Any]) -> list[str]:
    if provider_format == "anthropic":
        return [t["name"] for t in body.get("tools") or []]
    return [t["function"]["name"] for t in body.get("tools") or []]


def upstream_chats(provider_format: str, stub: StubUpstream) -> list[Recorded]:
    chats = list(stub.requests)
    assert [r.path for r in chats] == [UPSTREAM_PATHS[provider_format]] * len(chats)
    return chats


# ── the cases ─────────────────────────────────────────────────────────────

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider_format", PROVIDER_FORMATS)
def test_a_conversation_of_three_turns(sdk_router: FastrouteProcess, fresh_stub: StubUpstream,
                                       provider_format: str, mode: str) -> None:
    out = run_script(sdk_router, "multi_turn.mjs", PLAIN_MODELS[provider_format], mode)
    assert out["questions"] == QUESTIONS
    assert out["texts"] == [f"stub: {q}" for q in QUESTIONS]
    assert out["finishReasons"] == ["stop"] * 3

    # each turn's upstream got every earlier question and answer, in order, and the new question
    chats = upstream_chats(provider_format, fresh_stub)
    assert len(chats) == 3
    for n, chat in enumerate(chats):
        expected = []
        for q in QUESTIONS[:n]:
            expected += [("user", [("text", q)]), ("assistant", [("text", f"stub: {q}")])]
        expected.append(("user", [("text", QUESTIONS[n])]))
        assert conversation(provider_format, chat.body) == expected, f"turn {n + 1}: {chat.body}"


@pytest.mark.parametrize("talks", [False, True], ids=["call-only", "talk-then-tool"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider_format", PROVIDER_FORMATS)
def test_a_tool_loop_in_one_call(sdk_router: FastrouteProcess, fresh_stub: StubUpstream,
                                 provider_format: str, mode: str, talks: bool) -> None:
    model = (TALKING_MODELS if talks else PLAIN_MODELS)[provider_format]
    nonce = f"nonce-{uuid.uuid4().hex[:12]}"
    result = f"sunny in {TOOL_ARGS['city']}, {nonce}"  # what tool_loop.mjs's execute returns
    out = run_script(sdk_router, "tool_loop.mjs", model, mode, nonce)
    assert out["toolCalls"] == [{"name": "weather", "input": TOOL_ARGS}]
    assert out["toolResults"] == [result]
    assert out["stepTexts"] == [PREAMBLE if talks else "", f"tool said: {result}"]
    assert (out["steps"], out["text"], out["finishReason"]) == (2, f"tool said: {result}", "stop")

    # step 2's upstream got the question, the assistant's turn (its sentence and call, together) and the result
    chats = upstream_chats(provider_format, fresh_stub)
    assert len(chats) == 2
    assert [offered_tools(provider_format, chat.body) for chat in chats] == [["weather"], ["weather"]]
    question = ("user", [("text", WEATHER_PROMPT)])
    assert conversation(provider_format, chats[0].body) == [question]
    ref = CALL_REFS[provider_format]
    said = [("text", PREAMBLE)] if talks else []
    assert conversation(provider_format, chats[1].body) == [
        question,
        ("assistant", [*said, ("call", ref, "weather", TOOL_ARGS)]),
        ("tool", [("result", ref, result)]),
    ], chats[1].body
