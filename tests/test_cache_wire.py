"""The exact cache over the wire: a real fastroute (``python -m fastroute serve``) with ``[cache]`` on,
the official OpenAI, Anthropic and Ollama SDKs, and the stub upstream, which records every call it gets.

A second identical request is a hit in every client dialect, streamed or not, and reaches no
upstream; ``X-Router-Cache`` says hit or miss; a hit costs 0 in ``/v1/admin/logs``; ``Cache-Control``
is honoured; temperature > 0 and tools are not cached by default; with ``kind = "redis"`` two
instances share one real redis-server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
import redis

from tests.conftest import FastrouteProcess
from tests.stub_upstream import StubUpstream

ADMIN = "fr-cache-admin-0123456789"
KEY = "sk-fr-cache-alice-0123456789"
ENV = {"FR_CACHE_ADMIN": ADMIN, "FR_CACHE_KEY": KEY}
AUTH = {"authorization": f"Bearer {KEY}"}
_n = itertools.count()


def config(stub: StubUpstream, extra: str = "") -> str:
    return f"""
[storage]
kind = "memory"

[admin]
token_env = "FR_CACHE_ADMIN"

[[keys]]
name = "alice"
key_env = "FR_CACHE_KEY"

[cache]
enabled = true
ttl_s = 600
{extra}

[[providers]]
name = "stub-openai"
format = "openai"
base_url = "{stub.base_url}"
cost_per_1m_tokens = 1000000.0

[[providers]]
name = "stub-anthropic"
format = "anthropic"
base_url = "http://{stub.host}:{stub.port}"
cost_per_1m_tokens = 1000000.0

[[providers]]
name = "stub-ollama"
format = "ollama"
base_url = "http://{stub.host}:{stub.port}"
cost_per_1m_tokens = 1000000.0

[[routers]]
type = "prefix"
model_prefix = "claude-"
provider = "stub-anthropic"

[[routers]]
type = "prefix"
model_prefix = "llama"
provider = "stub-ollama"

[[routers]]
type = "prefix"
model_prefix = ""
provider = "stub-openai"
"""


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    upstream = StubUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def proc(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    conf = tmp_path_factory.mktemp("cache") / "c.toml"
    conf.write_text(config(stub))
    p = FastrouteProcess([str(conf)], env=ENV).start()
    yield p
    p.stop()


def question() -> str:
    """A prompt no other test asks (the cache lives as long as the module's server)."""
    return f"what is {next(_n)} plus one"


def gpt(proc: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key=KEY, max_retries=0, timeout=30)


def claude(proc: FastrouteProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proc.url, api_key=KEY, max_retries=0, timeout=30)


def logs(proc: FastrouteProcess, limit: int = 20) -> list[dict[str, Any]]:
    r = httpx.get(f"{proc.url}/v1/admin/logs", params={"limit": limit},
                  headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def settled(proc: FastrouteProcess, request_id: str) -> None:
    """Wait for a streamed exchange's end.  A stream's answer is kept when the exchange ends, a moment
    after its last event reached the client (the SDK may send its next request before): once its
    record is in the audit log, the answer is kept too (nothing awaits between the two)."""
    stub_wait = StubUpstream.wait_for
    assert stub_wait(None, lambda: any(r["request_id"] == request_id for r in logs(proc, 50)))  # type: ignore[arg-type]


def calls(stub: StubUpstream) -> int:
    return len(stub.requests)


# ── every dialect, streamed and not ───────────────────────────────────────

@pytest.mark.parametrize("model", ["gpt-x", "claude-x"])  # OpenAI fast path; translated to Anthropic
def test_openai_chat_hits(proc: FastrouteProcess, stub: StubUpstream, model: str) -> None:
    q = question()
    messages = [{"role": "user", "content": q}]
    before = calls(stub)
    first = gpt(proc).chat.completions.with_raw_response.create(model=model, messages=messages)
    again = gpt(proc).chat.completions.with_raw_response.create(model=model, messages=messages)
    assert calls(stub) == before + 1
    assert first.headers["x-router-cache"] == "miss" and again.headers["x-router-cache"] == "hit"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content == f"stub: {q}"
    # the stream of the same request is served from the same entry, in the OpenAI stream's shape
    raw = gpt(proc).chat.completions.with_raw_response.create(model=model, messages=messages, stream=True)
    assert raw.headers["x-router-cache"] == "hit"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"stub: {q}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert calls(stub) == before + 1


def test_openai_stream_first_then_hits(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    messages = [{"role": "user", "content": q}]
    before = calls(stub)
    raw = gpt(proc).chat.completions.with_raw_response.create(model="gpt-x", messages=messages, stream=True)
    assert raw.headers["x-router-cache"] == "miss"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == f"stub: {q}"
    settled(proc, raw.headers["x-request-id"])
    raw = gpt(proc).chat.completions.with_raw_response.create(model="gpt-x", messages=messages, stream=True)
    assert raw.headers["x-router-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == f"stub: {q}"
    plain = gpt(proc).chat.completions.with_raw_response.create(model="gpt-x", messages=messages)
    assert plain.headers["x-router-cache"] == "hit" and plain.parse().choices[0].message.content == f"stub: {q}"
    assert calls(stub) == before + 1


def test_responses_hits(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    before = calls(stub)
    first = gpt(proc).responses.with_raw_response.create(model="gpt-x", input=q)
    again = gpt(proc).responses.with_raw_response.create(model="gpt-x", input=q)
    assert calls(stub) == before + 1
    assert first.headers["x-router-cache"] == "miss" and again.headers["x-router-cache"] == "hit"
    assert again.parse().output_text == first.parse().output_text == f"stub: {q}"
    assert again.parse().id != first.parse().id  # a Responses answer is a new response, kept under its own id
    kept = gpt(proc).responses.retrieve(again.parse().id)
    assert kept.output_text == f"stub: {q}"
    raw = gpt(proc).responses.with_raw_response.create(model="gpt-x", input=q, stream=True)
    assert raw.headers["x-router-cache"] == "hit"
    events = list(raw.parse())
    assert events[-1].type == "response.completed" and events[-1].response.output_text == f"stub: {q}"
    assert calls(stub) == before + 1


@pytest.mark.parametrize("model", ["claude-x", "gpt-x"])  # Anthropic fast path; translated to OpenAI
def test_anthropic_hits(proc: FastrouteProcess, stub: StubUpstream, model: str) -> None:
    q = question()
    messages = [{"role": "user", "content": q}]
    before = calls(stub)
    first = claude(proc).messages.with_raw_response.create(model=model, max_tokens=64, messages=messages)
    again = claude(proc).messages.with_raw_response.create(model=model, max_tokens=64, messages=messages)
    assert calls(stub) == before + 1
    assert first.headers["x-router-cache"] == "miss" and again.headers["x-router-cache"] == "hit"
    assert again.parse().content[0].text == first.parse().content[0].text == f"stub: {q}"
    with claude(proc).messages.stream(model=model, max_tokens=64, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"stub: {q}" and final.stop_reason == "end_turn"
    assert calls(stub) == before + 1


@pytest.mark.parametrize("model", ["llama3", "gpt-x"])  # Ollama fast path; translated to OpenAI
def test_ollama_hits(proc: FastrouteProcess, stub: StubUpstream, model: str) -> None:
    q = question()
    messages = [{"role": "user", "content": q}]
    client = ollama.Client(host=proc.url, headers=AUTH)
    before = calls(stub)
    first = client.chat(model=model, messages=messages, stream=False)
    again = client.chat(model=model, messages=messages, stream=False)
    assert calls(stub) == before + 1
    assert again.message.content == first.message.content == f"stub: {q}" and again.done
    parts = list(client.chat(model=model, messages=messages, stream=True))
    assert "".join(p.message.content for p in parts) == f"stub: {q}" and parts[-1].done
    assert calls(stub) == before + 1
    r = httpx.post(f"{proc.url}/api/chat", json={"model": model, "messages": messages, "stream": False}, timeout=30, headers=AUTH)
    assert r.headers["x-router-cache"] == "hit" and r.json()["message"]["content"] == f"stub: {q}"


# ── what a hit costs, and what is not cached ──────────────────────────────

def test_a_hit_costs_nothing_in_the_audit_log(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    messages = [{"role": "user", "content": q}]
    miss = gpt(proc).chat.completions.with_raw_response.create(model="gpt-x", messages=messages)
    hit = gpt(proc).chat.completions.with_raw_response.create(model="gpt-x", messages=messages)
    ids = {miss.headers["x-request-id"]: "miss", hit.headers["x-request-id"]: "hit"}
    found = {r["request_id"]: r for r in logs(proc) if r["request_id"] in ids}
    assert {r["cache"] for r in found.values()} == {"hit", "miss"}
    for rid, verdict in ids.items():
        r = found[rid]
        assert r["cache"] == verdict and r["provider"] == "stub-openai" and r["status"] == 200
        if verdict == "hit":
            assert r["cost_micros"] == 0 and r["prompt_tokens"] == r["completion_tokens"] == 0
        else:
            assert r["cost_micros"] > 0 and r["prompt_tokens"] > 0
    metrics = httpx.get(f"{proc.url}/metrics", timeout=10).text
    hits = [line for line in metrics.splitlines() if line.startswith('fastroute_cache_hits_total{provider="stub-openai"}')]
    assert hits and float(hits[0].split()[-1]) >= 1
    assert 'fastroute_cache_misses_total{provider="stub-openai"}' in metrics


def test_cache_control_is_honoured(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": q}]}
    url = f"{proc.url}/v1/chat/completions"
    before = calls(stub)
    # no-store: neither looked up nor kept
    r = httpx.post(url, json=body, headers={**AUTH, "cache-control": "no-store"}, timeout=30)
    assert r.headers["x-router-cache"] == "bypass"
    assert httpx.post(url, json=body, timeout=30, headers=AUTH).headers["x-router-cache"] == "miss"
    assert calls(stub) == before + 2
    assert httpx.post(url, json=body, timeout=30, headers=AUTH).headers["x-router-cache"] == "hit"
    # no-cache: not looked up (the upstream is asked again), the fresh answer kept
    r = httpx.post(url, json=body, headers={**AUTH, "cache-control": "max-age=0, no-cache"}, timeout=30)
    assert r.headers["x-router-cache"] == "bypass" and r.json()["choices"][0]["message"]["content"] == f"stub: {q}"
    assert calls(stub) == before + 3
    assert httpx.post(url, json=body, timeout=30, headers=AUTH).headers["x-router-cache"] == "hit"
    assert calls(stub) == before + 3


def test_warm_requests_and_tools_are_not_cached_by_default(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    url = f"{proc.url}/v1/chat/completions"
    warm = {"model": "gpt-x", "messages": [{"role": "user", "content": q}], "temperature": 0.7}
    tools = {"model": "gpt-x", "messages": [{"role": "user", "content": q}], "temperature": 0,
             "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}
    cold = {"model": "gpt-x", "messages": [{"role": "user", "content": q}], "temperature": 0}
    before = calls(stub)
    for body in (warm, warm, tools, tools):
        r = httpx.post(url, json=body, timeout=30, headers=AUTH)
        assert r.status_code == 200 and "x-router-cache" not in r.headers
    assert calls(stub) == before + 4
    assert [httpx.post(url, json=cold, timeout=30, headers=AUTH).headers["x-router-cache"] for _ in range(2)] == ["miss", "hit"]
    assert calls(stub) == before + 5


def test_what_changes_the_answer_changes_the_key(proc: FastrouteProcess, stub: StubUpstream) -> None:
    q = question()
    url = f"{proc.url}/v1/chat/completions"
    base = {"model": "gpt-x", "messages": [{"role": "user", "content": q}]}
    assert httpx.post(url, json=base, timeout=30, headers=AUTH).headers["x-router-cache"] == "miss"
    # what cannot change the answer: the same entry
    same = {**base, "user": "someone", "metadata": {"run": "2"}}
    assert httpx.post(url, json=same, timeout=30, headers=AUTH).headers["x-router-cache"] == "hit"
    # what can: another entry
    for changed in ({**base, "max_tokens": 7}, {**base, "model": "gpt-y"}, {**base, "seed": 3},
                    {**base, "messages": [{"role": "system", "content": "be brief"}, *base["messages"]]}):
        assert httpx.post(url, json=changed, timeout=30, headers=AUTH).headers["x-router-cache"] == "miss", changed


def test_a_failed_or_cut_answer_is_not_kept(proc: FastrouteProcess, stub: StubUpstream) -> None:
    url = f"{proc.url}/v1/chat/completions"
    for model in ("stub-error-500", "stub-cut"):
        body = {"model": model, "stream": model == "stub-cut", "messages": [{"role": "user", "content": question()}]}
        before = calls(stub)
        for _ in range(2):
            r = httpx.post(url, json=body, timeout=30, headers=AUTH)
            assert r.headers.get("x-router-cache") == "miss"
            settled(proc, r.headers["x-request-id"])
        assert calls(stub) == before + 2


# ── Redis: one cache for two instances ────────────────────────────────────

def test_redis_cache_is_shared_by_two_instances(stub: StubUpstream, redis_server: Any, tmp_path: Path) -> None:
    from tests.redis_server import PASSWORD, redis_url

    conf = tmp_path / "c.toml"
    conf.write_text(config(stub).replace('kind = "memory"', f'kind = "redis"\nredis_url = "{redis_url(redis_server.port)}"\n'
                                         'redis_password_env = "FR_CACHE_REDIS"\nkey_prefix = "t-cache:"'))
    env = {**ENV, "FR_CACHE_REDIS": PASSWORD}
    one, two = FastrouteProcess([str(conf)], env=env).start(), FastrouteProcess([str(conf)], env=env).start()
    try:
        q = question()
        messages = [{"role": "user", "content": q}]
        before = calls(stub)
        first = gpt(one).chat.completions.with_raw_response.create(model="gpt-x", messages=messages)
        assert first.headers["x-router-cache"] == "miss"
        # the store rides with the client's next write, or goes 5 ms later: wait until Redis holds it
        r = redis.Redis(port=redis_server.port, password=PASSWORD)
        assert stub.wait_for(lambda: len(r.keys("t-cache:cache:*")) == 1)
        assert 0 < r.pttl(r.keys("t-cache:cache:*")[0]) <= 600_000
        again = gpt(two).chat.completions.with_raw_response.create(model="gpt-x", messages=messages)
        assert again.headers["x-router-cache"] == "hit" and again.parse().choices[0].message.content == f"stub: {q}"
        raw = gpt(two).chat.completions.with_raw_response.create(model="gpt-x", messages=messages, stream=True)
        assert raw.headers["x-router-cache"] == "hit"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == f"stub: {q}"
        assert calls(stub) == before + 1
        # Redis away: a miss, never a failed request
        redis_server.stop()
        r = httpx.post(f"{two.url}/v1/chat/completions", json={"model": "gpt-x", "messages": messages}, timeout=30, headers=AUTH)
        assert r.status_code == 200 and r.headers["x-router-cache"] == "miss"
        assert r.json()["choices"][0]["message"]["content"] == f"stub: {q}"
        assert "cache:" in two.output and "is away" in two.output
    finally:
        one.stop()
        two.stop()


# ── the dashboard counts the hits ─────────────────────────────────────────

def test_dashboard_shows_cache_hits(tmp_path: Path) -> None:
    from tests.test_dashboard_browser import Page, _need_browser, drive

    _need_browser()
    conf = tmp_path / "c.toml"
    conf.write_text("""
[server]
dashboard = true
[storage]
kind = "memory"
[cache]
enabled = true
[[providers]]
name = "echo"
format = "echo"
cost_per_1m_tokens = 3.0
[[routers]]
type = "prefix"
model_prefix = ""
provider = "echo"
""")
    proc = FastrouteProcess([str(conf)]).start()

    def send() -> str:
        return httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                          json={"model": "echo", "messages": [{"role": "user", "content": "same again"}]}
                          ).headers["x-router-cache"]

    async def scenario(page: Page) -> None:
        await page.call("Page.navigate", url=f"{proc.url}/dashboard")
        await page.until("document.getElementById('conn').textContent === 'live'")
        assert [await asyncio.to_thread(send) for _ in range(3)] == ["miss", "hit", "hit"]
        await page.until_equal("document.getElementById('summary').textContent", "3 requests, 0 errors, 2 cache hits")

    drive(proc, scenario)
