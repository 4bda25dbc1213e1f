"""The routing pipeline through a real fastroute: classifiers, every rule type, discovery,
plugins (built in and from entry points), failover and circuit breakers, transparency."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import ROOT, FastrouteProcess, free_port
from tests.stub_upstream import StubUpstream

PLUGIN_DIR = Path(__file__).parent / "plugin_fixture"
USER = [{"role": "user", "content": "hello big world"}]
PIXEL = base64.b64encode(b"\x89PNG fake").decode()


def routing_config(stub: StubUpstream, breaker_threshold: int = 1000) -> str:
    dead, dead2 = free_port(), free_port()
    return f"""
[failover]
max_attempts = 3
backoff_ms = 5
breaker_threshold = {breaker_threshold}
breaker_cooldown_s = 60

[discovery]
interval_s = 0.3
timeout_s = 1

[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
cost_per_1m_tokens = 1.0
quality = 70
latency_ms = 300
throughput_tokens_per_sec = 50
capabilities = ["tools"]

[[providers]]
name = "stub-vision"
format = "openai"
base_url = "{stub.base_url}"
cost_per_1m_tokens = 5.0
quality = 90
capabilities = ["vision", "tools"]

[[providers]]
name = "impatient"
format = "openai"
base_url = "{stub.base_url}"
read_timeout = 0.5

[[providers]]
name = "dead"
format = "openai"
base_url = "http://127.0.0.1:{dead}/v1"
connect_timeout = 1

[[providers]]
name = "breaker-box"
format = "openai"
base_url = "{stub.base_url}"

[[providers]]
name = "local"
format = "ollama"
base_url = "http://{stub.host}:{stub.port}"

[[providers]]
name = "local-down"
format = "ollama"
base_url = "http://127.0.0.1:{dead2}"

[classifiers.keyword]
enabled = true

[classifiers.keyword.tags]
code = ["stack trace", "def "]

[response_classifiers.refusal]
enabled = true

[plugins.response-healing]
enabled = false

[plugins.pareto-router]
enabled = false
default_tier = "low"

[plugins.pareto-router.tiers]
low = ["echo"]
high = ["stub"]

[[routers]]
type = "tag"
tag = "code"
provider = "echo"
rewrite_model = "echo-coder"

[[routers]]
type = "prefix"
model_prefix = "failover-dead"
provider = "dead"
rewrite_model = "stub-model"
fallbacks = ["stub"]

[[routers]]
type = "prefix"
model_prefix = "failover-429"
provider = "stub"
rewrite_model = "stub-429"
fallback_models = ["stub-model"]

[[routers]]
type = "prefix"
model_prefix = "failover-500"
provider = "stub"
rewrite_model = "stub-error-500"
fallback_models = ["stub-model"]

[[routers]]
type = "prefix"
model_prefix = "failover-hang"
provider = "impatient"
rewrite_model = "stub-hang"
fallback_models = ["stub-model"]

[[routers]]
type = "prefix"
model_prefix = "all-fail"
provider = "dead"
rewrite_model = "stub-hang"
fallbacks = ["impatient"]

[[routers]]
type = "prefix"
model_prefix = "context"
provider = "stub"
rewrite_model = "stub-context"
fallback_models = ["stub-model"]

[[routers]]
type = "prefix"
model_prefix = "breaker"
provider = "breaker-box"
rewrite_model = "stub-error-500"

[[routers]]
type = "discover"
provider = "local"

[[routers]]
type = "discover"
provider = "local-down"

[[routers]]
type = "price"
providers = ["stub", "stub-vision"]
max_cost_per_1m_tokens = 10

[[routers]]
type = "latency"
providers = ["stub"]

[[routers]]
type = "throughput"
providers = ["stub"]
min_tokens_per_sec = 10

[[routers]]
type = "fallback"
quality_bias = 0.7

[[routers]]
type = "random"
candidates = [{{ provider = "stub", model = "stub-model" }}, {{ provider = "echo", model = "echo" }}]
"""


@pytest.fixture(scope="module")
def piped(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    conf = tmp_path_factory.mktemp("pipeline") / "routing.toml"
    conf.write_text(routing_config(stub))
    proc = FastrouteProcess([str(conf)], env={"PYTHONPATH": f"{PLUGIN_DIR}:{ROOT}"}).start()
    yield proc
    proc.stop()


def gpt(proc: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key="x", max_retries=0, timeout=30)


def chat(proc: FastrouteProcess, body: dict) -> httpx.Response:
    return httpx.post(f"{proc.url}/v1/chat/completions", json=body, timeout=30)


# ── classifiers and rules ─────────────────────────────────────────────────

@pytest.mark.parametrize("stream", [False, True])
def test_keyword_tags_route_and_show_in_headers(piped: FastrouteProcess, stream: bool) -> None:
    body = {"model": "anything", "stream": stream,
            "messages": [{"role": "system", "content": "You fix Python."},
                         {"role": "user", "content": "Here is my STACK TRACE, please help"}]}
    resp = chat(piped, body)
    assert resp.status_code == 200
    assert resp.headers["x-router-request-tags"] == "code"
    assert resp.headers["x-router-provider"] == "echo" and resp.headers["x-router-model"] == "echo-coder"


def test_price_rule_skips_models_without_vision(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    text = chat(piped, {"model": "gpt-x", "messages": USER})
    assert text.headers["x-router-provider"] == "stub"  # the cheaper one
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{PIXEL}"}}]}]
    vision = chat(piped, {"model": "gpt-x", "messages": image})
    assert vision.status_code == 200 and vision.headers["x-router-provider"] == "stub-vision"


def test_discovered_models_route_and_list(piped: FastrouteProcess) -> None:
    out = ollama.Client(host=piped.url).chat(model="stub-llama:latest", messages=USER, stream=False)
    assert out.message.content == "stub: hello big world"
    names = {m.model for m in ollama.Client(host=piped.url).list().models}
    assert "stub-llama:latest" in names
    # the provider that is down keeps serving nothing, and breaks nothing
    assert chat(piped, {"model": "gpt-x", "messages": USER}).status_code == 200


def test_discovered_capabilities_decide_and_show(piped: FastrouteProcess) -> None:
    local = ollama.Client(host=piped.url)
    assert local.show("stub-llava:7b").capabilities == ["completion", "vision"]  # from the server's /api/show
    assert local.show("qwen2.5-coder:7b").capabilities == ["completion", "coding", "tools"]  # coding: the name
    assert local.show("stub-llama:latest").capabilities == ["completion", "tools"]
    listed = {m["id"]: m for m in httpx.get(f"{piped.url}/v1/models").json()["data"]}
    assert listed["stub-llava:7b"]["capabilities"] == ["vision"] and listed["stub-llava:7b"]["owned_by"] == "local"
    assert listed["qwen2.5-coder:7b"]["capabilities"] == ["coding", "tools"]
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{PIXEL}"}}]}]
    # a model that cannot see is passed over for a picture; one that can takes it
    blind = httpx.post(f"{piped.url}/v1/route", json={"model": "stub-llama:latest", "messages": image}).json()
    discover = next(r for r in blind["rules"] if r["type"] == "discover" and "local" in r["rule"])
    assert not discover["matched"] and "vision" in discover["reason"], discover
    assert blind["route"]["provider"] == "stub-vision"
    resp = chat(piped, {"model": "stub-llava:7b", "messages": image})
    assert resp.status_code == 200 and resp.headers["x-router-provider"] == "local"


def test_discovery_refreshes_in_the_background(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    before = fresh_stub.tag_calls
    assert fresh_stub.wait_for(lambda: fresh_stub.tag_calls >= before + 2, timeout=5)


def test_route_endpoint_explains_without_calling_anyone(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    resp = httpx.post(f"{piped.url}/v1/route", json={"model": "gpt-x", "messages": USER})
    data = resp.json()
    assert resp.status_code == 200 and data["route"]["provider"] == "stub"
    rules = data["rules"]
    assert rules[0]["type"] == "tag" and "not tagged 'code'" in rules[0]["reason"]
    assert rules[1]["type"] == "prefix" and "does not start with 'failover-dead'" in rules[1]["reason"]
    assert rules[-1]["type"] == "price" and rules[-1]["matched"]
    assert not [r for r in fresh_stub.requests if r.path.endswith("/chat/completions")]
    claude_shape = httpx.post(f"{piped.url}/v1/route?dialect=anthropic", json={
        "model": "breaker-x", "max_tokens": 5, "messages": USER})
    assert claude_shape.json()["route"] == {"provider": "breaker-box", "model": "stub-error-500", "rule": 7,
                                            "fallbacks": []}


def test_check_prints_every_rule_type(piped: FastrouteProcess, stub: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "routing.toml"
    conf.write_text(routing_config(stub))
    out = subprocess.run([sys.executable, "-m", "fastroute", "check", str(conf)], capture_output=True, text=True,
                         env={"PYTHONPATH": f"{PLUGIN_DIR}:{ROOT}", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    for fragment in ("tag 'code' -> echo as 'echo-coder'", "prefix 'failover-dead' -> dead as 'stub-model'; then stub",
                     "discover: models local lists", "price: cheapest of stub, stub-vision up to 10/1M",
                     "latency: fastest declared of stub", "throughput: highest of stub at least 10 tok/s",
                     "fallback: best quality/cost (bias 0.7) of all providers",
                     "random of stub:stub-model, echo:echo"):
        assert fragment in out.stdout, fragment


# ── failover ──────────────────────────────────────────────────────────────

@pytest.mark.parametrize("model", ["failover-dead", "failover-429", "failover-500", "failover-hang"])
@pytest.mark.parametrize("stream", [False, True])
def test_failover_before_the_first_byte(piped: FastrouteProcess, fresh_stub: StubUpstream, model: str,
                                        stream: bool) -> None:
    client = gpt(piped)
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model=model, messages=USER).choices[0].message.content
    assert text == "stub: hello big world"
    assert fresh_stub.requests[-1].body["model"] == "stub-model"
    resp = chat(piped, {"model": model, "messages": USER})
    assert resp.headers["x-router-attempts"] == "2" and resp.headers["x-router-model"] == "stub-model"


def test_client_errors_are_not_failed_over(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    resp = chat(piped, {"model": "context", "messages": USER})
    assert resp.status_code == 400 and "maximum context length" in resp.json()["error"]["message"]
    assert [r.body["model"] for r in fresh_stub.requests] == ["stub-context"]


def test_when_everything_fails_the_last_error_is_answered(piped: FastrouteProcess) -> None:
    resp = chat(piped, {"model": "all-fail", "messages": USER})
    assert resp.status_code == 504 and "provider 'impatient' timed out" in resp.json()["error"]["message"]
    # an error answer says who failed, like any other
    assert resp.headers["x-router-provider"] == "impatient" and resp.headers["x-router-model"] == "stub-hang"
    assert resp.headers["x-router-attempts"] == "2"


@pytest.mark.parametrize("stream", [False, True])
def test_on_end_runs_for_failed_requests_too(piped: FastrouteProcess, tmp_path: Path, stream: bool) -> None:
    tally = tmp_path / "tally.txt"
    plugins = [{"id": "tally", "path": str(tally)}]
    ok = chat(piped, {"model": "gpt-x", "messages": USER, "stream": stream, "plugins": plugins})
    # fails over to stub-model: a success
    failed_over = chat(piped, {"model": "failover-500", "messages": USER, "stream": stream, "plugins": plugins})
    broken = chat(piped, {"model": "breaker-x", "messages": USER, "stream": stream, "plugins": plugins})
    assert ok.status_code == failed_over.status_code == 200
    assert broken.status_code == 502 and broken.headers["x-router-provider"] == "breaker-box"
    lines = tally.read_text().splitlines()
    assert lines[:2] == ["ok|stub: hello big world"] * 2
    assert len(lines) == 3 and lines[2].startswith("provider 'breaker-box'") and "500" in lines[2], lines


def test_breaker_opens_after_consecutive_failures(stub: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "breaker.toml"
    conf.write_text(routing_config(stub, breaker_threshold=2))
    proc = FastrouteProcess([str(conf)], env={"PYTHONPATH": f"{PLUGIN_DIR}:{ROOT}"}).start()
    try:
        stub.reset()
        for _ in range(2):
            assert chat(proc, {"model": "breaker-x", "messages": USER}).status_code == 502
        # the breaker is open: breaker-box is not asked again, the next rule that fits answers
        resp = chat(proc, {"model": "breaker-x", "messages": USER})
        assert resp.status_code == 200 and resp.headers["x-router-provider"] == "stub"
        assert [r.body["model"] for r in stub.requests] == ["stub-error-500", "stub-error-500", "breaker-x"]
        explained = httpx.post(f"{proc.url}/v1/route", json={"model": "breaker-x", "messages": USER}).json()
        assert "circuit breaker open" in explained["rules"][7]["reason"]
        # while "dead" is broken, its rule passes and the next one answers, with no connect attempt
        for _ in range(2):
            chat(proc, {"model": "failover-dead", "messages": USER})
        resp = chat(proc, {"model": "failover-dead", "messages": USER})
        assert resp.status_code == 200 and resp.headers["x-router-provider"] == "stub"
        assert "x-router-attempts" not in resp.headers
    finally:
        proc.stop()


# ── plugins ───────────────────────────────────────────────────────────────

def test_response_healing_per_request(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": '{"a": [1, 2'}]}
    plain = chat(piped, body).json()["choices"][0]["message"]["content"]
    assert plain == 'stub: {"a": [1, 2'
    healed = gpt(piped).chat.completions.create(**body, extra_body={"plugins": [{"id": "response-healing"}]})
    assert healed.choices[0].message.content == '{"a": [1, 2]}'
    assert "plugins" not in fresh_stub.requests[-1].body  # removed before forwarding


def test_pareto_router_forces_the_tier_provider(piped: FastrouteProcess) -> None:
    low = chat(piped, {"model": "gpt-x", "messages": USER, "plugins": [{"id": "pareto-router"}]})
    assert low.headers["x-router-provider"] == "echo"  # default tier
    high = chat(piped, {"model": "stub-model", "messages": USER,
                        "plugins": [{"id": "pareto-router", "tier": "high"}]})
    assert high.headers["x-router-provider"] == "stub"
    bad = chat(piped, {"model": "gpt-x", "messages": USER, "plugins": [{"id": "pareto-router", "tier": "ultra"}]})
    assert bad.status_code == 500 and "plugin 'pareto-router' failed" in bad.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_entry_point_plugin_can_answer_without_a_provider(piped: FastrouteProcess, fresh_stub: StubUpstream,
                                                          stream: bool) -> None:
    claude = anthropic.Anthropic(base_url=piped.url, api_key="x", max_retries=0)
    kwargs = dict(model="gpt-x", max_tokens=10, messages=[{"role": "user", "content": "ping"}],
                  extra_body={"plugins": [{"id": "canned"}]})
    if stream:
        with claude.messages.stream(**kwargs) as s:
            text = "".join(s.text_stream)
    else:
        text = claude.messages.create(**kwargs).content[0].text
    assert text == "pong"
    assert not fresh_stub.requests  # no provider was called


def test_plugin_that_changes_the_request_and_one_that_fails(piped: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    out = gpt(piped).chat.completions.create(model="stub-model", messages=USER,
                                             extra_body={"plugins": [{"id": "shouty"}]})
    assert out.choices[0].message.content == "stub: HELLO BIG WORLD"
    resp = chat(piped, {"model": "gpt-x", "messages": USER, "plugins": [{"id": "broken"}]})
    assert resp.status_code == 500
    assert "plugin 'broken' failed in pre_request: this plugin always fails" in resp.json()["error"]["message"]
    unknown = chat(piped, {"model": "gpt-x", "messages": USER, "plugins": [{"id": "nope"}]})
    assert unknown.status_code == 400 and "unknown plugin 'nope'" in unknown.json()["error"]["message"]


def test_refusal_tags_the_response(piped: FastrouteProcess) -> None:
    resp = chat(piped, {"model": "gpt-x", "messages": [{"role": "user", "content": "I can't help with that"}]})
    assert resp.headers["x-router-response-tags"] == "refusal"
    assert "x-router-response-tags" not in chat(piped, {"model": "gpt-x", "messages": USER}).headers


ENDPOINTS = {
    "openai": ("/v1/chat/completions", lambda m, s: {"model": m, "messages": USER, "stream": s}),
    "responses": ("/v1/responses", lambda m, s: {"model": m, "input": "hello big world", "stream": s}),
    "anthropic": ("/v1/messages", lambda m, s: {"model": m, "max_tokens": 20, "messages": USER, "stream": s}),
    "ollama": ("/api/chat", lambda m, s: {"model": m, "messages": USER, "stream": s}),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("stream", [False, True])
def test_failover_and_tags_through_every_endpoint(piped: FastrouteProcess, fresh_stub: StubUpstream, endpoint: str,
                                                  stream: bool) -> None:
    path, make = ENDPOINTS[endpoint]
    resp = httpx.post(f"{piped.url}{path}", json=make("failover-dead", stream), timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-router-provider"] == "stub" and resp.headers["x-router-attempts"] == "2"
    assert b"stub: hello big world" in resp.content or b"stub:" in resp.content
    tagged = make("whatever", stream)
    tagged_resp = httpx.post(f"{piped.url}{path}", json={**tagged, **(
        {"input": "def main(): pass"} if endpoint == "responses" else
        {"messages": [{"role": "user", "content": "def main(): pass"}]})}, timeout=30)
    assert tagged_resp.headers["x-router-request-tags"] == "code"
    assert tagged_resp.headers["x-router-provider"] == "echo"


def test_openai_format_discovery(stub: StubUpstream) -> None:
    import asyncio

    from fastroute.config import config_from_dict
    from fastroute.providers import build_providers
    from fastroute.routing.discovery import Discovery

    cfg = config_from_dict({"providers": [
        {"name": "vllm", "format": "openai", "base_url": stub.base_url, "discover": True},
        {"name": "gone", "format": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "discover": True}]})
    providers = build_providers(cfg, None)
    providers["gone"].discovered = {"old-model": frozenset()}

    async def run() -> None:
        d = Discovery(cfg, providers)
        await d.refresh()
        await d.stop()

    asyncio.run(run())
    assert providers["vllm"].models() == ["stub-model"] and providers["vllm"].reachable
    assert providers["gone"].models() == ["old-model"] and not providers["gone"].reachable
