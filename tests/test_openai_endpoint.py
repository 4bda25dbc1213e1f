"""OpenAI clients through a real fastroute process, to the stub upstream and to echo."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import PROVIDER_KEY, FastrouteProcess, logging_to, start_router
from tests.stub_upstream import StubUpstream

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def sdk(router: FastrouteProcess, key: str = "client-key-not-for-upstream") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key=key, max_retries=0, timeout=30)


def post(router: FastrouteProcess, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{router.url}/v1/chat/completions", json=body, timeout=30, **kw)


# ── the fast path: same dialect, bytes untouched ──────────────────────────

def test_non_stream_bytes_pass_untouched(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    body = {"model": "stub-model", "messages": MESSAGES, "temperature": 0.3, "some_future_field": {"x": [1, 2]}}
    direct = httpx.post(f"{fresh_stub.base_url}/chat/completions", json=body)
    through = post(router, body)
    assert through.status_code == 200
    assert through.content == direct.content
    assert through.headers["x-router-provider"] == "stub"
    # what the upstream received: the client's body, fields fastroute does not know included
    assert fresh_stub.requests[-1].body == body


def test_stream_bytes_pass_untouched(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    body = {"model": "stub-model", "messages": MESSAGES, "stream": True}
    direct = httpx.post(f"{fresh_stub.base_url}/chat/completions", json=body)
    with httpx.stream("POST", f"{router.url}/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        through = resp.read()
    assert through == direct.content
    assert through.endswith(b"data: [DONE]\n\n")
    # fastroute asked the upstream for usage (for its own accounting) and kept the extra chunk from the client
    assert fresh_stub.requests[-1].body == {**body, "stream_options": {"include_usage": True}}
    assert b'"usage"' not in through


def test_rewrite_model_changes_only_the_model(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    body = {"model": "alias-anything", "messages": MESSAGES, "top_p": 0.5, "stop": ["\n"], "seed": 7}
    resp = post(router, body)
    assert resp.status_code == 200
    assert resp.headers["x-router-model"] == "stub-rewritten"
    assert fresh_stub.requests[-1].body == {**body, "model": "stub-rewritten"}


# ── the official SDK ──────────────────────────────────────────────────────

def test_sdk_non_stream_through_stub(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    out = sdk(router).chat.completions.create(model="stub-model", messages=MESSAGES)
    assert out.choices[0].message.content == "stub: hello big world"
    assert out.usage is not None and out.usage.prompt_tokens == 5


def test_sdk_stream_through_stub(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    stream = sdk(router).chat.completions.create(model="stub-model", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stub: hello big world"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_sdk_echo_non_stream_and_stream(router: FastrouteProcess) -> None:
    client = sdk(router)
    out = client.chat.completions.create(model="echo", messages=MESSAGES)
    assert out.choices[0].message.content == "hello big world"
    assert out.choices[0].finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (5, 3)
    chunks = list(client.chat.completions.create(model="echo", messages=MESSAGES, stream=True))
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == ["hello", " big", " world"]  # word by word
    assert chunks[-1].usage.completion_tokens == 3


def test_models_and_health(router: FastrouteProcess) -> None:
    assert httpx.get(f"{router.url}/health").text == "ok"
    ids = {m.id: m.owned_by for m in sdk(router).models.list()}
    # declared models, then the names the rules route: whole-name prefixes and rewrite targets
    assert ids == {"echo": "echo", "stub-model": "stub", "o/stub-llama": "stub-ollama", "stub-cookie": "stub",
                   "alias": "stub", "stub-rewritten": "stub", "slowpoke": "stub-impatient", "stub-hang": "stub",
                   "forward": "stub-forward", "dead": "dead", "stub": "stub"}


# ── keys ──────────────────────────────────────────────────────────────────

def test_client_key_never_reaches_provider(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    sdk(router, key="client-secret-xyz").chat.completions.create(model="stub-model", messages=MESSAGES)
    headers = {k.lower(): v for k, v in fresh_stub.requests[-1].headers.items()}
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "client-secret-xyz" not in str(headers)
    post(router, {"model": "slowpoke", "messages": MESSAGES}, headers={"x-api-key": "client-secret-xyz"})
    headers = {k.lower(): v for k, v in fresh_stub.requests[-1].headers.items()}
    assert "authorization" not in headers and "x-api-key" not in headers  # no key configured: none sent


def test_forward_client_key(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    post(router, {"model": "forward-me", "messages": MESSAGES}, headers={"x-api-key": "client-own-key"})
    headers = {k.lower(): v for k, v in fresh_stub.requests[-1].headers.items()}
    assert headers["authorization"] == "Bearer client-own-key"


# ── bad input ─────────────────────────────────────────────────────────────

@pytest.mark.parametrize("raw, fragment, param", [
    (b"{not json", "not valid JSON", None),
    (b"", "empty", None),
    (b"[1, 2]", "the request body: expected an object, got an array", None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model: is required", "model"),
    (b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}',
     "model: expected a non-empty string, got an integer", "model"),
    (b'{"model": "echo"}', "messages: is required", "messages"),
    (b'{"model": "echo", "messages": "hi"}', "messages: expected a non-empty array, got a string", "messages"),
    (b'{"model": "echo", "messages": ["hi"]}', "messages[0]: expected an object, got a string", "messages[0]"),
    (b'{"model": "echo", "messages": [{"role": "wizard", "content": "hi"}]}',
     "messages[0].role: expected one of 'assistant', 'developer', 'function', 'system', 'tool', 'user', got 'wizard'",
     "messages[0].role"),
    (b'{"model": "echo", "messages": [{"role": "user", "content": 5}]}',
     "messages[0].content: expected a string or an array, got an integer", "messages[0].content"),
    (b'{"model": "echo", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}',
     "stream: expected a boolean, got a string", "stream"),
    (b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": '
     b'[{"type": "image_url", "image_url": ["http://x/y.png"]}]}]}',
     "messages[1].content[0].image_url: expected an object, got an array", "messages[1].content[0].image_url"),
    (b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "tools": true}',
     "tools: expected an array, got a boolean", "tools"),
    (b'{"model": "echo", "messages": [{"role": "assistant", "content": null, "tool_calls": [null]}]}',
     "messages[0].tool_calls[0]: expected an object, got null", "messages[0].tool_calls[0]"),
])
def test_bad_input_is_400_in_openai_shape(router: FastrouteProcess, raw: bytes, fragment: str,
                                          param: str | None) -> None:
    resp = httpx.post(f"{router.url}/v1/chat/completions", content=raw,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert error["param"] == param


def test_sdk_sees_bad_request(router: FastrouteProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(router).chat.completions.create(model="nobody-serves-this", messages=MESSAGES)
    assert "no provider configured for model 'nobody-serves-this'" in str(info.value)


def test_too_large_is_413(router: FastrouteProcess) -> None:
    resp = post(router, {"model": "echo", "messages": [{"role": "user", "content": "x" * 300000}]})
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "request_too_large"


def test_unknown_route_is_404(router: FastrouteProcess) -> None:
    resp = httpx.get(f"{router.url}/v2/nothing")
    assert resp.status_code == 404 and "no route" in resp.json()["error"]["message"]


# ── upstream failures ─────────────────────────────────────────────────────

@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_502_naming_provider(router: FastrouteProcess, stream: bool) -> None:
    resp = post(router, {"model": "stub-error-500", "messages": MESSAGES, "stream": stream})
    assert resp.status_code == 502
    message = resp.json()["error"]["message"]
    assert "provider 'stub'" in message and "HTTP 500" in message and "exploded" in message
    assert PROVIDER_KEY not in resp.text


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_4xx_keeps_status_and_message(router: FastrouteProcess, stream: bool) -> None:
    resp = post(router, {"model": "stub-context", "messages": MESSAGES, "stream": stream})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length" in resp.json()["error"]["message"]
    resp = post(router, {"model": "stub-429", "messages": MESSAGES, "stream": stream})
    assert resp.status_code == 429


def test_sdk_sees_upstream_errors(router: FastrouteProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        sdk(router).chat.completions.create(model="stub-context", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(router).chat.completions.create(model="stub-error-500", messages=MESSAGES)
    assert info.value.status_code == 502


def test_unreachable_is_502(router: FastrouteProcess) -> None:
    resp = post(router, {"model": "dead-end", "messages": MESSAGES})
    assert resp.status_code == 502
    message = resp.json()["error"]["message"]
    assert "provider 'dead'" in message and "cannot connect" in message


@pytest.mark.parametrize("stream", [False, True])
def test_timeout_is_504(router: FastrouteProcess, stream: bool) -> None:
    resp = post(router, {"model": "slowpoke", "messages": MESSAGES, "stream": stream})
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["type"] == "upstream_timeout"
    assert "provider 'stub-impatient' timed out" in error["message"] and "0.5 s" in error["message"]


def test_garbage_from_upstream_is_passed_not_crashed(router: FastrouteProcess) -> None:
    resp = post(router, {"model": "stub-garbage", "messages": MESSAGES})
    # a 200 from the upstream is the upstream's answer: forwarded, and fastroute keeps serving
    assert resp.status_code == 200 and resp.content == b"<html>not json</html>"
    assert post(router, {"model": "echo", "messages": MESSAGES}).status_code == 200


def test_stream_cut_halfway_ends_with_an_error_not_done(router: FastrouteProcess) -> None:
    with httpx.stream("POST", f"{router.url}/v1/chat/completions",
                      json={"model": "stub-cut", "messages": MESSAGES, "stream": True}, timeout=30) as resp:
        assert resp.status_code == 200
        raw = resp.read()
    assert b"[DONE]" not in raw
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    last = events[-1]
    assert last.startswith(b"data: ")
    error = orjson.loads(last[6:])["error"]
    assert "provider 'stub'" in error["message"] and error["type"] == "upstream_error"
    with pytest.raises(openai.APIError):
        for _ in sdk(router).chat.completions.create(model="stub-cut", messages=MESSAGES, stream=True):
            pass


def test_client_disconnect_cancels_upstream(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    with httpx.stream("POST", f"{router.url}/v1/chat/completions",
                      json={"model": "stub-slow", "messages": MESSAGES, "stream": True}, timeout=30) as resp:
        for _ in zip(range(3), resp.iter_raw()):
            pass
    # the client is gone: fastroute must drop the upstream request, not read it for a minute
    assert fresh_stub.wait_for(lambda: fresh_stub.cancelled == 1, timeout=10)
    assert post(router, {"model": "echo", "messages": MESSAGES}).status_code == 200


def test_stream_chunks_are_forwarded_as_they_arrive(router: FastrouteProcess, fresh_stub: StubUpstream) -> None:
    # stub-paced sends ten events 100 ms apart: the first must reach the client
    # while the upstream is still streaming, not after fastroute gathered them all
    with httpx.stream("POST", f"{router.url}/v1/chat/completions", timeout=30,
                      json={"model": "stub-paced", "messages": MESSAGES, "stream": True}) as resp:
        chunks = resp.iter_raw()
        first = next(chunks)
        assert b"part0" in first and b"part9" not in first
        assert fresh_stub.finished_streams == 0
        rest = b"".join(chunks)
    assert b"part9" in rest and rest.endswith(b"data: [DONE]\n\n")


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_tool_calls_pass_through(router: FastrouteProcess, fresh_stub: StubUpstream, stream: bool) -> None:
    client = sdk(router)
    if stream:
        chunks = list(client.chat.completions.create(model="stub-model", messages=MESSAGES, tools=[TOOL], stream=True))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert deltas[0].id == "call_stub1" and deltas[0].function.name == "get_weather"
        args = "".join(d.function.arguments or "" for d in deltas)
    else:
        out = client.chat.completions.create(model="stub-model", messages=MESSAGES, tools=[TOOL])
        args = out.choices[0].message.tool_calls[0].function.arguments
    assert orjson.loads(args) == {"city": "Paris"}
    assert fresh_stub.requests[-1].body["tools"] == [TOOL]
    follow = MESSAGES + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_stub1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "call_stub1", "content": "sunny, 21C"}]
    out = client.chat.completions.create(model="stub-model", messages=follow, tools=[TOOL])
    assert out.choices[0].message.content == "tool said: sunny, 21C"


@pytest.mark.parametrize("model", ["a/stub-cut", "o/stub-cut"])
def test_translated_stream_cut_halfway_is_an_error_for_openai_clients(router: FastrouteProcess, model: str) -> None:
    with httpx.stream("POST", f"{router.url}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": MESSAGES, "stream": True}) as resp:
        assert resp.status_code == 200
        raw = resp.read()
    assert b"[DONE]" not in raw
    last = [e for e in raw.split(b"\n\n") if e.strip()][-1]
    assert "provider 'stub-" in orjson.loads(last[6:])["error"]["message"]
    with pytest.raises(openai.APIError):
        for _ in sdk(router).chat.completions.create(model=model, messages=MESSAGES, stream=True):
            pass


@pytest.mark.parametrize("model", ["named/x", "stub-cookie"])
def test_upstream_cookies_are_never_kept(router: FastrouteProcess, fresh_stub: StubUpstream, model: str) -> None:
    for _ in range(2):  # the first answer sets a cookie; the second request must not carry it
        out = sdk(router).chat.completions.create(model=model, messages=MESSAGES)
        assert out.choices[0].message.content == "cookie: none"
    assert all("Cookie" not in r.headers for r in fresh_stub.requests)


def test_a_client_that_hangs_up_after_the_streams_end_got_a_whole_answer(tmp_path: Path, stub: StubUpstream) -> None:
    """The client reads to ``[DONE]`` and hangs up while the upstream's body has not ended yet
    (stub-linger ends it 2 s later): it got the whole answer, and the log says 200, not 499."""
    log_path = tmp_path / "requests.jsonl"
    proc = start_router(tmp_path, stub, "lean", extra=logging_to(log_path))
    try:
        with httpx.stream("POST", f"{proc.url}/v1/chat/completions", timeout=30,
                          json={"model": "stub-linger", "messages": MESSAGES, "stream": True}) as resp:
            seen = b""
            for chunk in resp.iter_raw():
                seen += chunk
                if seen.endswith(b"data: [DONE]\n\n"):
                    break  # and hang up, as SDKs do
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log_path.exists() and log_path.read_text().strip()):
            time.sleep(0.05)
        entry = orjson.loads(log_path.read_text().splitlines()[-1])
        assert (entry["status"], entry["error"]) == (200, None), entry
        assert entry["usage"]["output_tokens"] > 0 and "stub: hello" in (entry["response"] or "")
    finally:
        proc.stop()
