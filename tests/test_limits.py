"""The [server] limits through a real fastroute process: headers, body size, JSON nesting, stream lines.

Each limit's error has its status and the client's dialect shape, and the server answers
``/health`` afterwards.  A small upstream of this module's own sends the over-long stream lines.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from fastroute.config import ServerConfig, config_from_dict
from fastroute.errors import ConfigError
from fastroute.limits import (
    MAX_STREAM_LINE_BYTES, NestingTooDeep, check_depth, granian_buffer, header_bytes, undecodable_depth,
)
from fastroute.server.runner import http_settings
from tests.conftest import PROVIDER_KEY, FastrouteProcess
from tests.stub_upstream import StubUpstream

HEADER_LIMIT = 8192
DEPTH_LIMIT = 16
BODY_LIMIT = 65536

#: each client dialect's chat endpoint
DIALECTS = {
    "openai": "/v1/chat/completions",
    "responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "ollama": "/api/chat",
}


def body_for(dialect: str, model: str = "stub-model", **extra: Any) -> dict[str, Any]:
    if dialect == "responses":
        return {"model": model, "input": "hello", **extra}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    if dialect == "anthropic":
        body["max_tokens"] = 16
    return body


def error_of(dialect: str, resp: httpx.Response) -> tuple[str | None, str]:
    """(error type, message) from an error body, checking it has the dialect's shape."""
    obj = resp.json()
    if dialect == "anthropic":
        assert obj["type"] == "error" and set(obj["error"]) == {"type", "message"}, obj
        return obj["error"]["type"], obj["error"]["message"]
    if dialect == "ollama":
        assert set(obj) == {"error"} and isinstance(obj["error"], str), obj
        return None, obj["error"]
    assert set(obj["error"]) >= {"message", "type", "param", "code"}, obj
    return obj["error"]["type"], obj["error"]["message"]


# ── the settings ───────────────────────────────────────────────────────────

@pytest.mark.parametrize("key, value, problem", [
    ("max_header_bytes", 1000, "must be at least 4096, got 1000"),
    ("max_json_depth", 4, "must be between 8 and 200, got 4"),
    ("max_json_depth", 300, "must be between 8 and 200, got 300"),
    ("max_stream_line_bytes", 100, "must be at least 1024, got 100"),
    ("max_json_depth", "64", "expected an integer"),
])
def test_limits_are_checked_at_startup(key: str, value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"server": {key: value}}, "f.toml")
    assert str(info.value).startswith(f"f.toml: server.{key}: {problem}")


def test_defaults_and_granians_settings() -> None:
    s = ServerConfig()
    assert (s.max_header_bytes, s.max_json_depth, s.max_stream_line_bytes) == (65536, 128, 16 * 1024 * 1024)
    settings = http_settings({"server": {"max_header_bytes": 200_000}}, "f.toml")
    assert settings["http1_settings"].max_buffer_size == settings["http2_settings"].max_headers_size == 400_000
    assert granian_buffer(8192) == 128 * 1024  # never below 128 KiB: it is also Granian's read size


def test_depth_is_counted_exactly_and_named_in_document_order() -> None:
    assert check_depth({"a": [1, {"b": "c"}]}, 3) is None  # three levels: fine at 3
    with pytest.raises(NestingTooDeep) as info:
        check_depth({"a": [1, {"b": "c"}], "z": [[[0]]]}, 3)
    assert info.value.param == "z[0][0]" and str(info.value).startswith("'z[0][0]': the request body nests deeper")
    with pytest.raises(NestingTooDeep) as info:
        check_depth(nested(40), 20)
    assert info.value.param == "[0].a[0].a[0].a[0].a..."  # eight steps shown, then "..."
    assert check_depth(nested(40), 20, size=41) is None  # 41 bytes cannot hold 21 levels: not looked at
    assert check_depth("[[[[[[[[[[", 3) is None  # a string is no nesting


def test_undecodable_depth_reads_only_what_is_outside_strings() -> None:
    def failure(doc: str) -> orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError) as info:
            orjson.loads(doc)
        return info.value

    deep = failure('{"a": "[[[\\"[[", "b": ' + "[" * 1100 + "]" * 1100 + "}")
    err = undecodable_depth(deep, 128)
    assert isinstance(err, NestingTooDeep) and "nests deeper than 128 levels, at character" in str(err)
    assert undecodable_depth(failure('{"a": "' + "[" * 2000 + '", "b": }'), 128) is None  # brackets in text
    assert undecodable_depth(failure('{"a": [[[1,}'), 128) is None


def test_header_size_counts_names_values_and_line_framing() -> None:
    assert header_bytes([(b"host", b"x"), (b"a", b"bc")]) == 4 + 1 + 4 + 1 + 2 + 4


# ── an upstream that sends over-long lines ─────────────────────────────────

class LongLines:
    """OpenAI SSE upstream in a thread: ``line-<n>`` streams one event whose data line is n bytes
    long and then ends properly; ``endless`` never ends its second line (it writes until the client
    goes, at most 64 MiB).  ``gone`` counts the streams whose client left before the end."""

    def __init__(self) -> None:
        self.port = 0
        self.gone = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> LongLines:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="long-lines").start()
        assert ready.wait(10)
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "fine"}, "finish_reason": None}]}
        await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        try:
            if model.startswith("line-"):
                n = int(model.removeprefix("line-"))
                head = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
                tail = b'"},"finish_reason":null}]}'
                await resp.write(head + b"x" * (n - len(head) - len(tail)) + tail + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
            else:  # endless
                await resp.write(b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"')
                for _ in range(64):
                    await resp.write(b"y" * (1024 * 1024))
                    await asyncio.sleep(0.01)
            await resp.write_eof()
        except asyncio.CancelledError:
            self.gone += 1
            raise
        except ConnectionError:  # the client (fastroute) went away
            self.gone += 1
        return resp


# ── the server ─────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def long_lines() -> Iterator[LongLines]:
    upstream = LongLines().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def limited(stub: StubUpstream, long_lines: LongLines, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    config = Path(tmp_path_factory.mktemp("limits")) / "limits.toml"
    config.write_text(f"""
[server]
max_body_bytes = {BODY_LIMIT}
max_header_bytes = {HEADER_LIMIT}
max_json_depth = {DEPTH_LIMIT}

[logging]
enabled = true
path = "{config.parent / 'requests.jsonl'}"

[failover]
max_attempts = 1
breaker_threshold = 1000

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"

[[providers]]
name = "long"
format = "openai"
base_url = "http://127.0.0.1:{long_lines.port}/v1"

[[routers]]
type = "prefix"
model_prefix = "line-"
provider = "long"

[[routers]]
type = "prefix"
model_prefix = "endless"
provider = "long"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"
""")
    proc = FastrouteProcess([str(config)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}).start()
    yield proc
    proc.stop()


def healthy(router: FastrouteProcess) -> None:
    assert httpx.get(f"{router.url}/health", timeout=10).text == "ok"


def post(router: FastrouteProcess, dialect: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(router.url + DIALECTS[dialect], content=content, headers=headers, timeout=60, **kw)


# ── headers ────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_headers_over_the_limit_are_431_in_the_dialect(limited: FastrouteProcess, dialect: str) -> None:
    ok = post(limited, dialect, body_for(dialect), headers={"x-pad": "a" * (HEADER_LIMIT - 1024)})
    assert ok.status_code == 200, ok.text
    resp = post(limited, dialect, body_for(dialect), headers={"x-pad": "a" * HEADER_LIMIT})
    assert resp.status_code == 431
    kind, message = error_of(dialect, resp)
    assert f"over the limit of {HEADER_LIMIT:,} bytes ([server] max_header_bytes)" in message
    if dialect in ("openai", "responses"):
        assert kind == "request_too_large"
    healthy(limited)


def test_a_head_beyond_granians_buffer_is_cut_by_granian(limited: FastrouteProcess) -> None:
    """Past twice the limit (at least 128 KiB) Granian refuses the head before the app sees it:
    431, an empty body, the connection closed -- and the server goes on."""
    cut = granian_buffer(HEADER_LIMIT)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-pad: " + b"a" * cut + b"\r\ncontent-length: 2\r\n\r\n{}")
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        try:
            s.sendall(head)
        except OSError:  # the server may close before it has read it all
            pass
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"connection: close" in rest.lower() and answer.endswith(b"\r\n\r\n")  # no body
    healthy(limited)


# ── body size ──────────────────────────────────────────────────────────────

@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_in_the_dialect(limited: FastrouteProcess, dialect: str, sized: bool) -> None:
    raw = orjson.dumps(body_for(dialect, pad="p" * BODY_LIMIT))
    if sized:
        resp = post(limited, dialect, raw)
    else:
        resp = httpx.post(limited.url + DIALECTS[dialect], content=iter([raw[:1000], raw[1000:]]),
                          headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 413
    kind, message = error_of(dialect, resp)
    assert f"over the limit of {BODY_LIMIT} bytes ([server] max_body_bytes)" in message
    if dialect in ("openai", "responses"):
        assert kind == "request_too_large"
    if dialect == "anthropic":
        assert kind == "request_too_large"
    healthy(limited)


def http_exchange(sock: socket.socket, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    """One HTTP/1.1 request on a kept-alive socket; its answer's status (0: the connection was closed)."""
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    try:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            rest += chunk
        return int(top.split(b" ")[1])
    except (ConnectionResetError, BrokenPipeError):
        return 0


@pytest.mark.parametrize("refusal", ["body", "headers"])
def test_the_connection_serves_the_next_request_after_a_refusal(limited: FastrouteProcess, refusal: str) -> None:
    """A refused body is read to its end and dropped (up to twice the limit): else Granian closes the
    connection behind an answer that did not say so, and the client's next request on it fails."""
    big = orjson.dumps(body_for("openai", pad="p" * (BODY_LIMIT + 50_000 if refusal == "body" else 100_000)))
    pad = {"x-pad": "a" * HEADER_LIMIT} if refusal == "headers" else {}
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:
        for _ in range(5):
            assert http_exchange(sock, DIALECTS["openai"], big, pad) == (413 if refusal == "body" else 431)
            assert http_exchange(sock, DIALECTS["openai"], orjson.dumps(body_for("openai"))) == 200


@pytest.fixture(scope="module")
def keyed(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    config = Path(tmp_path_factory.mktemp("keyed")) / "keyed.toml"
    config.write_text(f"""
[server]
api_key_env = "FR_LIMITS_SERVER_KEY"

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"
""")
    proc = FastrouteProcess([str(config)], env={"FR_LIMITS_SERVER_KEY": "sk-the-servers-own"}).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("path", [*DIALECTS.values(), "/v1/messages/count_tokens", "/v1/route"])
def test_the_connection_serves_the_next_request_after_a_refused_key(keyed: FastrouteProcess, path: str) -> None:
    """A request refused for its key before its body was read: the body is still read and dropped."""
    dialect = next((d for d, p in DIALECTS.items() if p == path), "anthropic")
    big = orjson.dumps(body_for(dialect, pad="p" * 200_000))
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=30) as sock:
        for _ in range(3):
            assert http_exchange(sock, path, big, {"authorization": "Bearer wrong"}) == 401
            assert http_exchange(sock, "/v1/chat/completions", orjson.dumps(body_for("openai")),
                                 {"authorization": "Bearer sk-the-servers-own"}) == 200


def test_the_connection_serves_the_next_request_after_a_404_with_a_body(limited: FastrouteProcess) -> None:
    big = orjson.dumps(body_for("openai", pad="p" * 60_000))
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:
        for _ in range(3):
            assert http_exchange(sock, "/v1/v1/chat/completions", big) == 404
            assert http_exchange(sock, DIALECTS["openai"], orjson.dumps(body_for("openai"))) == 200


def test_a_client_gone_before_its_body_arrived_is_logged_as_499(limited: FastrouteProcess) -> None:
    log = Path(limited.args[0]).parent / "requests.jsonl"
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 5000\r\n\r\n" + b'{"model": "stub-model", "messages": [')
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = [orjson.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if any(e["status"] == 499 for e in lines):
            break
        time.sleep(0.05)
    gone = [e for e in lines if e["status"] == 499]
    assert len(gone) == 1 and "closed the connection before its request body arrived" in gone[0]["error"]
    healthy(limited)


# ── JSON nesting ───────────────────────────────────────────────────────────

def nested(levels: int) -> Any:
    """``levels`` levels of containers, lists and dicts by turns, a list outermost: [{"a": [{"a": ...}]}]."""
    value: Any = 0
    for i in range(levels):
        value = [value] if (levels - 1 - i) % 2 == 0 else {"a": value}
    return value


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_body_nested_too_deep_is_400_naming_where(limited: FastrouteProcess, dialect: str) -> None:
    # the body is level 1, messages 2, messages[0] 3, content 4, content[0] 5: x below it is 6
    def deep(levels: int) -> dict[str, Any]:
        body = body_for(dialect)
        block = {"type": "text", "text": "hi", "x": nested(levels)}
        if dialect == "responses":
            body["input"] = [{"type": "message", "role": "user", "content": [block]}]
        else:
            body["messages"][0]["content"] = [block]
        return body

    resp = post(limited, dialect, deep(DEPTH_LIMIT - 5 + 1))  # one level too many
    assert resp.status_code == 400
    kind, message = error_of(dialect, resp)
    where = "input[0].content[0].x" if dialect == "responses" else "messages[0].content[0].x"
    assert message.startswith(f"'{where}[0].a[0]...': the request body nests deeper than {DEPTH_LIMIT} levels"), message
    assert message.endswith("([server] max_json_depth)")
    if dialect != "ollama":
        assert kind == "invalid_request_error"
    healthy(limited)


def test_depth_at_the_limit_passes(limited: FastrouteProcess) -> None:
    body = body_for("openai", some_future_field=nested(DEPTH_LIMIT - 1))  # the body itself is level 1
    resp = post(limited, "openai", body)
    assert resp.status_code == 200, resp.text
    resp = post(limited, "openai", body_for("openai", some_future_field=nested(DEPTH_LIMIT)))
    assert resp.status_code == 400 and "'some_future_field[0].a[0].a[0].a[0]...'" in resp.json()["error"]["message"]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_deeper_than_orjson_goes_is_400_too(limited: FastrouteProcess, dialect: str) -> None:
    """orjson refuses beyond 1024 levels itself: still a 400 saying the body nests too deep."""
    raw = b'{"model": "stub-model", "messages": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    resp = post(limited, dialect, raw)
    assert resp.status_code == 400
    _, message = error_of(dialect, resp)
    assert message.startswith(f"the request body nests deeper than {DEPTH_LIMIT} levels, at character ")
    broken = post(limited, dialect, b'{"model": "stub-model", "messages": [[[1,}')  # shallow, not JSON
    assert broken.status_code == 400 and "is not valid JSON" in error_of(dialect, broken)[1]
    # brackets inside strings are text, not nesting
    text = "[" * 2000
    fine = post(limited, "openai", body_for("openai", messages=[{"role": "user", "content": text}]))
    assert fine.status_code == 200, fine.text
    healthy(limited)


def test_count_tokens_reads_with_the_same_limits(limited: FastrouteProcess) -> None:
    body = body_for("anthropic", system=[{"type": "text", "text": "s", "x": nested(DEPTH_LIMIT)}])
    resp = httpx.post(f"{limited.url}/v1/messages/count_tokens", json=body, timeout=30)
    assert resp.status_code == 400
    assert error_of("anthropic", resp)[1].startswith("'system[0].x[0].a[0].a[0]...': the request body nests deeper")


# ── upstream stream lines ──────────────────────────────────────────────────

def sse_events(data: bytes) -> list[bytes]:
    return [part for part in data.split(b"\n\n") if part.strip()]


def test_translated_stream_with_a_line_over_the_limit_ends_with_an_error_event(limited: FastrouteProcess) -> None:
    """An Anthropic client, an OpenAI upstream: the upstream's line passes the bound, the client's
    stream ends with an error event in its own dialect that says so."""
    body = body_for("anthropic", model=f"line-{MAX_STREAM_LINE_BYTES + 100}", stream=True)
    with httpx.stream("POST", limited.url + DIALECTS["anthropic"], json=body, timeout=120) as resp:
        assert resp.status_code == 200
        data = resp.read()
    events = sse_events(data)
    assert events[-1].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[-1].partition(b"data: ")[2])
    assert error["type"] == "error"
    assert f"over {MAX_STREAM_LINE_BYTES:,} bytes" in error["error"]["message"]
    assert "max_stream_line_bytes" in error["error"]["message"] and "provider 'long'" in error["error"]["message"]
    assert b"fine" in data  # what came before the long line reached the client
    healthy(limited)


def test_line_at_the_limit_passes_translated(limited: FastrouteProcess) -> None:
    body = body_for("anthropic", model=f"line-{MAX_STREAM_LINE_BYTES - 1000}", stream=True)
    with httpx.stream("POST", limited.url + DIALECTS["anthropic"], json=body, timeout=120) as resp:
        data = resp.read()
    assert b"event: error" not in data and sse_events(data)[-1].startswith(b"event: message_stop")


@pytest.mark.parametrize("dialect", ["anthropic", "openai"], ids=["translated", "passthrough"])
def test_endless_line_is_cut_not_buffered(limited: FastrouteProcess, long_lines: LongLines, dialect: str) -> None:
    """An upstream that never ends its line: the client's stream ends with an error once the
    line passes the bound, and fastroute lets the upstream go, rather than buffering up to 64 MiB."""
    gone = long_lines.gone
    with httpx.stream("POST", limited.url + DIALECTS[dialect], json=body_for(dialect, model="endless", stream=True),
                      timeout=120) as resp:
        data = resp.read()
    last = sse_events(data)[-1]
    assert b"error" in last and b"max_stream_line_bytes" in last, last[:300]
    assert len(data) < MAX_STREAM_LINE_BYTES  # the unfinished line never went to the client
    for _ in range(200):
        if long_lines.gone > gone:
            break
        threading.Event().wait(0.05)
    assert long_lines.gone > gone
    healthy(limited)
