"""``POST /v1/messages/count_tokens``: routed like ``/v1/messages``; an ``anthropic`` provider counts,
any other is counted here.  A real fastroute process over the stub upstream, then the counter itself."""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import bpe_openai
import httpx
import orjson
import pytest

from fastroute.canonical import ChatRequest, DocumentPart, ImagePart, Message, TextPart, ThinkingPart, Tool, ToolCall
from fastroute.formats import anthropic as anthropic_dialect
from fastroute.tokens import (
    IMAGE_TOKENS, MESSAGE_OVERHEAD, NAME_OVERHEAD, PAGE_TOKENS, REPLY_PRIMING, SLICE_CHARS, TOOL_CALL_OVERHEAD,
    TOOL_OVERHEAD, TOOLS_OVERHEAD, TokenCounter, encoding_for_model,
)
from tests.conftest import PROVIDER_KEY, ROOT, FastrouteProcess, free_port
from tests.stub_upstream import StubUpstream

SERVER_KEY = "sk-fastroute-server-key-9876543210"
PATH = "/v1/messages/count_tokens"
NO_SUCH_LIBRARY = "fastroute_tests_no_such_tokenizer"


def config(stub: StubUpstream, upstream_client: str) -> str:
    anthropic_base = f"http://{stub.host}:{stub.port}"
    return f"""
[server]
upstream_client = "{upstream_client}"
api_key_env = "FASTROUTE_TEST_SERVER_KEY"

[classifiers.keyword]
enabled = true
[classifiers.keyword.tags]
bananas = ["banana"]

[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "stub-openai"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"

[[providers]]
name = "text-only"
format = "openai"
base_url = "{stub.base_url}"
capabilities = ["tools"]

[[providers]]
name = "stub-ollama"
format = "ollama"
base_url = "{anthropic_base}"

[[providers]]
name = "stub-anthropic"
format = "anthropic"
base_url = "{anthropic_base}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"

[[providers]]
name = "anthropic-impatient"
format = "anthropic"
base_url = "{anthropic_base}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
read_timeout = 0.5

[[providers]]
name = "anthropic-dead"
format = "anthropic"
base_url = "http://127.0.0.1:{free_port()}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
connect_timeout = 2

[[routers]]
type = "tag"
tag = "bananas"
provider = "stub-anthropic"
rewrite_model = "a/banana-model"

[[routers]]
type = "prefix"
model_prefix = "claude-"
provider = "stub-anthropic"
rewrite_model = "a/claude-routed"

[[routers]]
type = "prefix"
model_prefix = "a/"
provider = "stub-anthropic"

[[routers]]
type = "prefix"
model_prefix = "slow/"
provider = "anthropic-impatient"
rewrite_model = "a/stub-hang"

[[routers]]
type = "prefix"
model_prefix = "dead/"
provider = "anthropic-dead"

[[routers]]
type = "prefix"
model_prefix = "vis/"
provider = "text-only"

[[routers]]
type = "prefix"
model_prefix = "vis/"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "gpt-"
provider = "stub-openai"

[[routers]]
type = "prefix"
model_prefix = "o/"
provider = "stub-ollama"

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"
"""


@pytest.fixture(scope="module", params=["lean", "aiohttp", "httpx"])
def router(request: pytest.FixtureRequest, stub: StubUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    path = tmp_path_factory.mktemp("count") / "fastroute.toml"
    path.write_text(config(stub, request.param))
    proc = FastrouteProcess([str(path)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY,
                                              "FASTROUTE_TEST_SERVER_KEY": SERVER_KEY}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def post(router: FastrouteProcess, body: Any, key: str | None = SERVER_KEY, **headers: str) -> httpx.Response:
    sent = {"content-type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if key is not None:
        sent["x-api-key"] = key
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(router.url + PATH, content=content, headers=sent, timeout=30)


def conversation(text: str = "What is the weather in Paris?", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "system": [{"type": "text", "text": "You are a weather bot.",
                                           "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": text}], **extra}


WEATHER_TOOL = {"name": "get_weather", "description": "The current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def upstream_headers(stub: StubUpstream) -> dict[str, str]:
    return {k.lower(): v for k, v in stub.requests[-1].headers.items()}


def anthropic_error(resp: httpx.Response, status: int, kind: str) -> str:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind, payload
    return payload["error"]["message"]


# ── routed to an anthropic provider ───────────────────────────────────────

def test_anthropic_provider_counts_with_its_own_key_and_the_routed_model(router: FastrouteProcess,
                                                                        fresh_stub: StubUpstream) -> None:
    body = conversation(model="claude-sonnet-4-6", tools=[WEATHER_TOOL], thinking={"type": "enabled",
                                                                                   "budget_tokens": 2048})
    resp = post(router, body, anthropic_version="2023-06-01", anthropic_beta="token-counting-2024-11-01,x-beta")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"input_tokens": 1000 + len(orjson.dumps(body["messages"]))}  # the stub's own answer
    assert resp.headers["x-router-provider"] == "stub-anthropic"
    assert resp.headers["x-router-model"] == "a/claude-routed"
    assert resp.headers["x-request-id"].startswith("req_")
    assert "x-router-token-count" not in resp.headers
    [seen] = fresh_stub.requests
    assert seen.path == PATH
    assert seen.body == {**body, "model": "a/claude-routed"}  # nothing else changed
    headers = upstream_headers(fresh_stub)
    assert headers["x-api-key"] == PROVIDER_KEY
    assert "authorization" not in headers
    assert not any(SERVER_KEY in v for v in headers.values())
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "token-counting-2024-11-01,x-beta"


def test_claude_codes_beta_query_goes_on(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    """Claude Code posts to ``/v1/messages/count_tokens?beta=true``; so does fastroute, upstream."""
    resp = httpx.post(f"{router.url}{PATH}?beta=true", json=conversation(model="a/stub-model"), timeout=30,
                      headers={"x-api-key": SERVER_KEY, "anthropic-beta": "claude-code-20250219"})
    assert resp.status_code == 200, resp.text
    assert (fresh_stub.requests[-1].path, fresh_stub.requests[-1].query) == (PATH, "beta=true")
    assert upstream_headers(fresh_stub)["anthropic-beta"] == "claude-code-20250219"


@pytest.fixture(scope="module", params=["lean", "aiohttp", "httpx"])
def forwarding(request: pytest.FixtureRequest, stub: StubUpstream,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    """A fastroute without a server key (with one, forward_client_key is a config error: the only key
    there would be to forward is the server's own)."""
    path = tmp_path_factory.mktemp("count-forward") / "fastroute.toml"
    path.write_text(f"""
[server]
upstream_client = "{request.param}"

[[providers]]
name = "anthropic-v1-forward"      # a base URL ending in /v1, and the client's own key
format = "anthropic"
base_url = "http://{stub.host}:{stub.port}/v1"
forward_client_key = true

[[routers]]
type = "prefix"
model_prefix = "fwd/"
provider = "anthropic-v1-forward"
""")
    proc = FastrouteProcess([str(path)]).start()
    yield proc
    proc.stop()


def test_forward_client_key_provider_gets_the_clients_key_at_its_v1_base(forwarding: FastrouteProcess,
                                                                        fresh_stub: StubUpstream) -> None:
    resp = post(forwarding, conversation(model="fwd/a/stub-model"), key="sk-ant-the-clients-own-key")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-router-provider"] == "anthropic-v1-forward"
    [seen] = fresh_stub.requests
    assert seen.path == PATH  # base ".../v1" + "/messages/count_tokens"
    headers = upstream_headers(fresh_stub)
    assert headers["x-api-key"] == "sk-ant-the-clients-own-key"
    assert headers["anthropic-version"] == "2023-06-01"  # the provider's default when the client sends none
    assert "anthropic-beta" not in headers


def test_classifier_tags_route_it(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    resp = post(router, conversation("I would like a banana, please"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-router-request-tags"] == "bananas"
    assert resp.headers["x-router-provider"] == "stub-anthropic"
    assert fresh_stub.requests[-1].body["model"] == "a/banana-model"


def test_an_image_routes_past_a_provider_without_vision(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    text_only = post(router, conversation(model="vis/model"))
    assert text_only.headers["x-router-provider"] == "text-only"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with_image = post(router, conversation(model="vis/model") | {
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]}]})
    assert with_image.status_code == 200, with_image.text
    assert with_image.headers["x-router-provider"] == "echo"
    assert with_image.json()["input_tokens"] > IMAGE_TOKENS
    assert fresh_stub.requests == []


def test_provider_errors_keep_anthropics_shape(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    own = post(router, conversation(model="a/stub-context"))  # a 4xx: the provider's own body and status
    assert own.status_code == 400
    assert own.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                     "message": "prompt is too long: 9000 tokens > 8192 maximum"}}
    failed = post(router, conversation(model="a/stub-error-500"))
    assert "provider 'stub-anthropic' failed: HTTP 500" in anthropic_error(failed, 502, "api_error")
    dead = post(router, conversation(model="dead/x"))
    assert "anthropic-dead" in anthropic_error(dead, 502, "api_error")
    slow = post(router, conversation(model="slow/x"))
    assert "anthropic-impatient" in anthropic_error(slow, 504, "timeout_error")
    for resp in (own, failed, dead, slow):
        assert resp.headers["x-request-id"].startswith("req_")
        assert PROVIDER_KEY not in resp.text and SERVER_KEY not in resp.text


# ── counted here ──────────────────────────────────────────────────────────

@pytest.mark.parametrize(("model", "provider", "method"), [
    ("gpt-4o", "stub-openai", "tokenizer=o200k_base"),
    ("gpt-4-0613", "stub-openai", "tokenizer=cl100k_base"),
    ("o/llama3.1:8b", "stub-ollama", "estimate; tokenizer=o200k_base"),
    ("echo-claude", "echo", "estimate; tokenizer=o200k_base"),
])
def test_other_providers_get_a_local_count(router: FastrouteProcess, fresh_stub: StubUpstream, counter: TokenCounter,
                                           model: str, provider: str, method: str) -> None:
    body = conversation(model=model, tools=[WEATHER_TOOL])
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-router-provider"] == provider
    assert resp.headers["x-router-token-count"] == method
    assert resp.headers["x-request-id"].startswith("req_")
    expected = counter.count(anthropic_dialect.parse_request(copy.deepcopy(body)), model)
    assert resp.json() == {"input_tokens": expected.input_tokens}
    assert fresh_stub.requests == []  # no provider was asked


def test_the_count_grows_with_text_tools_and_tool_results(router: FastrouteProcess) -> None:
    def count(body: dict[str, Any]) -> int:
        resp = post(router, body)
        assert resp.status_code == 200, resp.text
        return resp.json()["input_tokens"]

    for model in ("gpt-4o", "echo"):
        short = count(conversation(model=model))
        longer = count(conversation("What is the weather in Paris? " * 50, model=model))
        with_tool = count(conversation(model=model, tools=[WEATHER_TOOL]))
        assert short < with_tool < longer
        turn = conversation(model=model, tools=[WEATHER_TOOL])
        turn["messages"] += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "Sunny, 21 degrees, light wind from the west"}]}]
        assert count(turn) > with_tool + 10


def test_a_system_message_in_the_conversation_is_counted(router: FastrouteProcess) -> None:
    body = conversation()
    plain = post(router, body).json()["input_tokens"]
    body["messages"].append({"role": "system", "content": "Answer in French, in one sentence."})
    resp = post(router, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["input_tokens"] > plain + MESSAGE_OVERHEAD


def test_the_first_count_loads_the_tokenizer_without_stalling_the_worker(stub: StubUpstream, tmp_path: Path) -> None:
    """Loading takes about a second: other requests are answered meanwhile (it loads in a thread).
    The count is sent whole on a raw socket first, so the health checks after it all wait for
    the worker if it is stalled."""
    path = tmp_path / "fastroute.toml"
    path.write_text(config(stub, "aiohttp"))
    proc = FastrouteProcess([str(path)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY,
                                              "FASTROUTE_TEST_SERVER_KEY": SERVER_KEY}).start()
    body = orjson.dumps(conversation())
    head = (f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"x-api-key: {SERVER_KEY}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")

    def read_all(sock: socket.socket) -> bytes:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data

    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=proc.url) as health, \
                socket.create_connection(("127.0.0.1", proc.port)) as sock:
            assert health.get("/health").status_code == 200  # connected before the count goes
            sock.sendall(head.encode() + body)
            first = pool.submit(read_all, sock)
            answered = 0
            while not first.done():
                answered += health.get("/health").status_code == 200
            answer = first.result()
        assert answer.startswith(b"HTTP/1.1 200") and b"x-router-token-count: tokenizer=o200k_base" in answer
        assert answered >= 20, f"only {answered} health checks answered while the tokenizer loaded"
    finally:
        proc.stop()


def test_a_real_claude_code_body_is_counted_or_passed_on(router: FastrouteProcess, fresh_stub: StubUpstream,
                                                          counter: TokenCounter) -> None:
    """The body of a captured Claude Code request (24 tools, a system message in place), as its
    count_tokens call carries it: to a local model it is counted here, to Anthropic passed on."""
    capture = orjson.loads((ROOT / "tests/fixtures/agents/claude_code_2.1.197_second.json").read_bytes())
    body = {k: v for k, v in capture["body"].items() if k not in ("max_tokens", "stream")}
    headers = {**capture["headers"], "x-api-key": SERVER_KEY}
    local = httpx.post(f"{router.url}{PATH}?beta=true", json={**body, "model": "o/qwen3:8b"}, headers=headers)
    assert local.status_code == 200, local.text
    assert local.headers["x-router-token-count"] == "estimate; tokenizer=o200k_base"
    parsed = anthropic_dialect.parse_request(copy.deepcopy({**body, "model": "o/qwen3:8b"}))
    assert local.json()["input_tokens"] == counter.count(parsed, "o/qwen3:8b").input_tokens
    no_tools = httpx.post(f"{router.url}{PATH}", json={**body, "model": "o/qwen3:8b", "tools": []}, headers=headers)
    assert no_tools.json()["input_tokens"] < local.json()["input_tokens"] // 2  # the tools are most of it
    assert fresh_stub.requests == []
    passed = httpx.post(f"{router.url}{PATH}?beta=true", json={**body, "model": "a/stub-model"}, headers=headers)
    assert passed.status_code == 200, passed.text
    [seen] = fresh_stub.requests
    assert seen.body == {**body, "model": "a/stub-model"}
    assert upstream_headers(fresh_stub)["anthropic-beta"] == capture["headers"]["anthropic-beta"]


# ── refused ───────────────────────────────────────────────────────────────

@pytest.mark.parametrize("body", [b"", b"{not json", b"[]", b'{"messages": []}', b'{"model": "gpt-4o"}',
                                  b'{"model": "gpt-4o", "messages": [{"role": "user", "content": 3}]}'],
                         ids=["empty", "not-json", "array", "no-model", "no-messages", "bad-content"])
def test_a_bad_body_is_an_anthropic_400(router: FastrouteProcess, fresh_stub: StubUpstream, body: bytes) -> None:
    anthropic_error(post(router, body), 400, "invalid_request_error")
    assert fresh_stub.requests == []


def test_a_model_no_rule_serves_is_a_400(router: FastrouteProcess) -> None:
    message = anthropic_error(post(router, conversation(model="nowhere-model")), 400, "invalid_request_error")
    assert "nowhere-model" in message


def test_the_server_key_is_enforced(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    anthropic_error(post(router, conversation(model="claude-x"), key=None), 401, "authentication_error")
    anthropic_error(post(router, conversation(model="claude-x"), key="sk-wrong"), 401, "authentication_error")
    assert fresh_stub.requests == []
    bearer = httpx.post(router.url + PATH, json=conversation(), headers={"authorization": f"Bearer {SERVER_KEY}"})
    assert bearer.status_code == 200, bearer.text


# ── the official SDK ──────────────────────────────────────────────────────

def test_the_anthropic_sdk_counts_through_fastroute(router: FastrouteProcess, fresh_stub: StubUpstream,
                                                    counter: TokenCounter) -> None:
    client = anthropic.Anthropic(base_url=router.url, api_key=SERVER_KEY, max_retries=0)
    messages = [{"role": "user", "content": "Hello, Claude"}]
    upstream = client.messages.count_tokens(model="claude-sonnet-4-6", system="You are a scientist",
                                            messages=messages, tools=[WEATHER_TOOL])
    assert upstream.input_tokens == 1000 + len(orjson.dumps(messages))
    assert upstream_headers(fresh_stub)["x-api-key"] == PROVIDER_KEY
    assert (fresh_stub.requests[-1].path, fresh_stub.requests[-1].query) == (PATH, "")
    beta = client.beta.messages.count_tokens(model="claude-sonnet-4-6", messages=messages)
    assert beta.input_tokens == 1000 + len(orjson.dumps(messages))
    assert "token-counting-2024-11-01" in upstream_headers(fresh_stub)["anthropic-beta"]
    raw = client.messages.with_raw_response.count_tokens(model="gpt-4.1-mini", system="You are a scientist",
                                                         messages=messages)
    assert raw.headers["x-router-token-count"] == "tokenizer=o200k_base"
    request = ChatRequest("gpt-4.1-mini", [Message("user", [TextPart("Hello, Claude")])], system="You are a scientist")
    assert raw.parse().input_tokens == counter.count(request, "gpt-4.1-mini").input_tokens
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=router.url, api_key="sk-wrong", max_retries=0).messages.count_tokens(
            model="gpt-4o", messages=messages)


# ── the counter ───────────────────────────────────────────────────────────

PROSE = ("The quick brown fox jumps over the lazy dog. Naïve café déjà vu, 東京 and 🚀 rockets!\n"
         "def handler(request):\n    return {'status': 200, \"body\": request.json()}\n\n")


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("text", ["", "hello world", PROSE, "   leading and trailing   ", "1234567890" * 7,
                                  PROSE * (3 * SLICE_CHARS // len(PROSE))],
                         ids=["empty", "words", "prose", "spaces", "digits", "longer-than-a-slice"])
def test_counts_are_exactly_bpe_openais(counter: TokenCounter, encoding: str, text: str) -> None:
    assert counter.count_text(text, encoding) == len(bpe_openai.get_encoding(encoding).encode_ordinary(text))


def _request() -> ChatRequest:
    return ChatRequest(
        model="gpt-4o", system="You are terse.",
        messages=[Message("user", [TextPart("Weather in Paris?")]),
                  Message("assistant", [ThinkingPart("they want weather", signature="sig")],
                          tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]),
                  Message("tool", [TextPart("Sunny, 21 C")], tool_call_id="call_1"),
                  Message("user", [TextPart("And tomorrow?")], name="alice")],
        tools=[Tool("get_weather", "The current weather", WEATHER_TOOL["input_schema"])])


def _expected(measure: Any) -> int:
    schema = orjson.dumps(WEATHER_TOOL["input_schema"]).decode()
    return (REPLY_PRIMING + MESSAGE_OVERHEAD + measure("You are terse.")
            + MESSAGE_OVERHEAD + measure("Weather in Paris?")
            + MESSAGE_OVERHEAD + TOOL_CALL_OVERHEAD + measure("get_weather") + measure('{"city": "Paris"}')
            + MESSAGE_OVERHEAD + measure("Sunny, 21 C")
            + MESSAGE_OVERHEAD + NAME_OVERHEAD + measure("alice") + measure("And tomorrow?")
            + TOOLS_OVERHEAD + TOOL_OVERHEAD + measure("get_weather") + measure("The current weather")
            + measure(schema))


def test_a_request_counts_system_messages_tool_calls_results_and_tools(counter: TokenCounter) -> None:
    enc = bpe_openai.get_encoding("o200k_base")
    count = counter.count(_request(), "gpt-4o")
    assert count.method == "tokenizer=o200k_base"
    assert count.input_tokens == _expected(lambda text: len(enc.encode_ordinary(text)))
    claude = counter.count(_request(), "claude-sonnet-4-6")
    assert claude == type(count)(count.input_tokens, "estimate; tokenizer=o200k_base")


@pytest.mark.parametrize("library", [NO_SUCH_LIBRARY, None])
def test_without_the_library_it_estimates_four_characters_a_token(library: str | None) -> None:
    counter = TokenCounter(library=library)
    count = counter.count(_request(), "gpt-4o")
    assert count.method == "estimate; chars/4"
    assert count.input_tokens == _expected(lambda text: -(-len(text) // 4))
    assert counter.ready("gpt-4o") and counter.count_text("x" * 9) == 3
    assert "fastroute_tests_no_such_tokenizer" not in sys.modules


def test_a_system_role_message_is_counted_like_any_message(counter: TokenCounter) -> None:
    request = _request()
    before = counter.count(request, "gpt-4o").input_tokens
    note = "From now on, answer in French."
    request.messages.insert(2, Message("system", [TextPart(note)]))
    assert counter.count(request, "gpt-4o").input_tokens == before + MESSAGE_OVERHEAD + counter.count_text(note)


def test_images_and_documents_are_estimated(counter: TokenCounter) -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R 4 0 R] >>\n" + b"".join(
        b"%d 0 obj << /Type /Page /Parent 1 0 R >>\n" % i for i in (2, 3, 4))
    parts = {
        "image": ([ImagePart(data="iVBORw0KGgo=", media_type="image/png")], IMAGE_TOKENS),
        "pdf": ([DocumentPart(data=base64.b64encode(pdf).decode(), media_type="application/pdf")], 3 * PAGE_TOKENS),
        "pdf-by-url": ([DocumentPart(url="https://example.com/a.pdf")], PAGE_TOKENS),
        "text-doc": ([DocumentPart(text=PROSE, media_type="text/plain")], counter.count_text(PROSE)),
        "base64-text-doc": ([DocumentPart(data=base64.b64encode(PROSE.encode()).decode(), media_type="text/plain")],
                            counter.count_text(PROSE)),
    }
    empty = counter.count(ChatRequest("gpt-4o", [Message("user", [])]), "gpt-4o").input_tokens
    for name, (content, tokens) in parts.items():
        got = counter.count(ChatRequest("gpt-4o", [Message("user", content)]), "gpt-4o").input_tokens
        assert got == empty + tokens, name


@pytest.mark.parametrize(("model", "encoding", "exact"), [
    ("gpt-4o", "o200k_base", True), ("gpt-4o-mini-2024-07-18", "o200k_base", True),
    ("openai/gpt-4.1", "o200k_base", True), ("gpt-5-codex", "o200k_base", True), ("o3-mini", "o200k_base", True),
    ("o1", "o200k_base", True), ("ft:gpt-4o-mini:acme::abc", "o200k_base", True),
    ("codex-mini-latest", "o200k_base", True), ("gpt-oss:20b", "o200k_base", True),
    ("gpt-4", "cl100k_base", True), ("gpt-4-turbo", "cl100k_base", True), ("gpt-3.5-turbo", "cl100k_base", True),
    ("claude-sonnet-4-6", "o200k_base", False), ("llama3.1:8b", "o200k_base", False),
    ("qwen2.5-coder:7b", "o200k_base", False), ("omni-moderation", "o200k_base", False),
])
def test_which_tokenizer_belongs_to_which_model(model: str, encoding: str, exact: bool) -> None:
    assert encoding_for_model(model) == (encoding, exact)


def test_nothing_loads_the_tokenizer_before_a_count() -> None:
    code = ("import sys\n"
            "import fastroute.server.app, fastroute.server.count_tokens\n"
            "from fastroute.tokens import TokenCounter\n"
            "counter = TokenCounter()\n"
            "assert not counter.ready('gpt-4o')\n"
            "assert 'bpe_openai' not in sys.modules, 'imported too early'\n"
            "counter.prepare('gpt-4o')\n"
            "assert 'bpe_openai' in sys.modules and counter.ready('gpt-4o')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
