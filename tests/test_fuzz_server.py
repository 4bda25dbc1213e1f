"""Property-based fuzzing through a real ``fastroute serve`` (one per module, examples in batches).

Behind it, the built-in ``echo`` provider and one provider of each format (``fz-openai``,
``fz-anthropic``, ``fz-ollama``) whose upstream is a scripted aiohttp server started here: it
answers each call with the bytes a test gave it for that call (the call is named by the model,
``fz-<format>/<token>``), written in the reads the test chose, or a canned valid answer.

Properties, checked for every request:

- a client body (any of the four endpoints, valid or broken, raw bytes that are not JSON) is
  answered with a status < 500 and a JSON error in the client dialect's error shape, or a 200
  with a correct answer in the client's dialect (the scripted upstream's text when it answered);
  the connection is never dropped;
- an upstream answer of a format other than the client's (the translated path) that is broken
  gives the client a 502 (or the upstream's own 4xx) in its dialect's error shape, or a stream
  that ends with an error event in its dialect — never a clean end; an intact one gives exactly
  its text and tool calls; either way the request log says so (an error, or none);
- a same-format answer (the fast path) reaches the client byte for byte, and a broken one is
  logged as an error;
- every request has exactly one line in the request log, with the status the client saw;
  ``/health`` answers after every batch, and nothing is left in flight at the end.

Budget and profiles: tests/fuzz_strategies.py; a longer run: docs/testing.md.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests import fuzz_strategies as fs
from tests.conftest import FastrouteProcess

fs.load_profile()
pytestmark = pytest.mark.timeout(fs.timeout(180))

ENDPOINTS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses",
             "ollama": "/api/chat"}
CLIENTS = tuple(ENDPOINTS)
#: what a provider of each format is reached by (the part after the prefix names the script)
PREFIX = {fmt: f"fz-{fmt}/" for fmt in fs.PROVIDER_FORMATS}
CANNED = fs.Plan(id="canned1", model="canned-model", text="canned ✓ answer", thinking="", calls=[],
                 input_tokens=3, output_tokens=2, stop="stop")
REQUEST_MODELS = st.sampled_from(["echo", *(p + "req" for p in PREFIX.values())])


# ── the scripted upstream ───────────────────────────────────────────────────

def canned(fmt: str, stream: bool) -> fs.UpstreamAnswer:
    """The answer the scripted upstream gives a call nobody scripted (the client-body tests)."""
    if not stream:
        return fs.UpstreamAnswer(fmt, False, [orjson.dumps(fs.ANSWER_JSON[fmt](CANNED))], CANNED)
    return fs.UpstreamAnswer(fmt, True, [fs.frame(fmt, ev)[0] for ev in _canned_events(fmt)], CANNED)


def _canned_events(fmt: str) -> list[fs.Event]:
    p = CANNED
    if fmt == "openai":
        chunk = {"id": p.id, "object": "chat.completion.chunk", "created": 1, "model": p.model}
        return [fs.Event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": p.text},
                                                 "finish_reason": None}]}),
                fs.Event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, terminal=True),
                fs.Event({**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
                fs.Event(None, raw=b"[DONE]", terminal=True)]
    if fmt == "anthropic":
        def ev(name: str, **payload: Any) -> fs.Event:
            return fs.Event({"type": name, **payload}, name=name, terminal=name in ("message_delta", "message_stop"))
        return [ev("message_start", message={"id": p.id, "type": "message", "role": "assistant", "model": p.model,
                                             "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}),
                ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": p.text}),
                ev("content_block_stop", index=0),
                ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2}),
                ev("message_stop")]
    base = {"model": p.model, "created_at": "2026-01-01T00:00:00Z"}
    return [fs.Event({**base, "message": {"role": "assistant", "content": p.text}, "done": False}),
            fs.Event({**base, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                      "prompt_eval_count": 3, "eval_count": 2}, terminal=True)]


@dataclass
class ScriptedUpstream:
    """An upstream of every provider format on 127.0.0.1 that answers what it is told to."""

    host: str = "127.0.0.1"
    port: int = 0
    scripts: dict[str, fs.UpstreamAnswer] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ScriptedUpstream:
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="scripted-upstream")
        self._thread.start()
        assert ready.wait(10), "the scripted upstream did not start"
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handler("openai"))
        app.router.add_post("/v1/messages", self._handler("anthropic"))
        app.router.add_post("/api/chat", self._handler("ollama"))
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]

    def script(self, token: str, answer: fs.UpstreamAnswer) -> None:
        self.scripts[token] = answer

    def _handler(self, fmt: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            body = body if isinstance(body, dict) else {}
            model = body.get("model") if isinstance(body.get("model"), str) else ""
            stream = body.get("stream", fmt == "ollama") is True  # Ollama streams unless told not to
            answer = self.scripts.pop(model.rpartition("/")[2], None) or canned(fmt, stream)
            if not answer.stream or answer.status != 200:
                return web.Response(status=answer.status, body=answer.body, content_type="application/json")
            resp = web.StreamResponse(status=200, headers={"content-type": answer.content_type})
            await resp.prepare(request)
            try:
                for chunk in answer.chunks:
                    if chunk:
                        await resp.write(chunk)
                await resp.write_eof()
            except ConnectionError:  # fastroute stopped reading (after an error, say): so do we
                pass
            return resp

        return handle


# ── the server ──────────────────────────────────────────────────────────────

class RequestLog:
    """The JSONL request log, read as it grows: every entry by request id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()  # the checks of one batch run in threads

    def read(self) -> None:
        with self.lock:
            self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            entry = orjson.loads(line)
            self.entries.setdefault(entry["id"], []).append(entry)

    def entry(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.entries and time.monotonic() < deadline:
            time.sleep(0.01)
            self.read()
        assert request_id in self.entries, f"request {request_id} has no line in the request log"
        found = self.entries[request_id]
        assert len(found) == 1, f"request {request_id} has {len(found)} lines in the request log"
        return found[0]


@dataclass(repr=False)
class Fuzzed:
    """The module's server, its upstream, its request log, and a client to both."""

    proc: FastrouteProcess
    upstream: ScriptedUpstream
    log: RequestLog
    client: httpx.Client
    pool: ThreadPoolExecutor
    tokens: Iterator[int]  # names each scripted call

    def __repr__(self) -> str:  # what Hypothesis prints beside a failing example
        return f"Fuzzed({self.proc.url}, upstream {self.upstream.url})"


def config(upstream: ScriptedUpstream, log: Path) -> str:
    providers = "".join(f"""
[[providers]]
name = "fz-{fmt}"
format = "{fmt}"
base_url = "{upstream.url}{'/v1' if fmt == 'openai' else ''}"
read_timeout = 20

[[routers]]
type = "prefix"
model_prefix = "{PREFIX[fmt]}"
provider = "fz-{fmt}"
""" for fmt in fs.PROVIDER_FORMATS)
    return f"""
[server]
max_body_bytes = 16777216

[logging]
enabled = true
path = "{log}"

[storage]
kind = "memory"

[failover]
max_attempts = 1             # one try: each script answers one call
breaker_threshold = 1000000  # these tests fail on purpose; breakers have their own tests

[[providers]]
name = "echo"
format = "echo"

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"
{providers}"""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("fuzz-server")
    upstream = ScriptedUpstream().start()
    (tmp / "fastroute.toml").write_text(config(upstream, tmp / "requests.jsonl"))
    proc = FastrouteProcess([str(tmp / "fastroute.toml")]).start()
    client = httpx.Client(base_url=proc.url, timeout=60, trust_env=False,
                          limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
    pool = ThreadPoolExecutor(6)
    counter = iter(range(10**9))
    try:
        yield Fuzzed(proc, upstream, RequestLog(tmp / "requests.jsonl"), client, pool, counter)
    finally:
        pool.shutdown()
        client.close()
        code = proc.stop()
        upstream.stop()
    assert code == 0, proc.output[-3000:]
    assert "Traceback" not in proc.output, proc.output[-5000:]


# ── one request ─────────────────────────────────────────────────────────────

@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def stream(self) -> bool:
        kind = self.headers.get("content-type", "")
        return kind.startswith(("text/event-stream", "application/x-ndjson"))


def post(f: Fuzzed, dialect: str, body: bytes, content_type: str = "application/json") -> Reply:
    try:
        with f.client.stream("POST", ENDPOINTS[dialect], content=body,
                             headers={"content-type": content_type}) as resp:
            return Reply(resp.status_code, resp.headers, resp.read())
    except httpx.HTTPError as exc:  # a dropped connection, a cut body
        raise AssertionError(f"the connection failed: {type(exc).__name__}: {exc}") from exc


def health(f: Fuzzed) -> None:
    resp = f.client.get("/health")
    assert resp.status_code == 200 and resp.text == "ok", f"/health: {resp.status_code} {resp.text[:200]}"


@dataclass
class Read:
    """What a client reads from an answer in its dialect."""

    error: str | None = None  # the error's message, when it is an error
    text: str = ""
    #: (name, arguments): a JSON text (OpenAI, Responses) or an object (Anthropic, Ollama)
    tools: list[tuple[str, Any]] = field(default_factory=list)

    def calls(self) -> list[tuple[str, Any]]:
        """The tool calls with their arguments as objects (asserting they are JSON)."""
        return [(name, _json(args.encode(), f"the arguments of {name}") if isinstance(args, str) else args)
                for name, args in self.tools]


def _json(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AssertionError(f"{what} is not JSON: {data[:300]!r}") from exc


def _string(value: Any, what: str) -> str:
    assert isinstance(value, str), f"{what} is not a string: {value!r}"
    return value


def error_of(dialect: str, obj: Any) -> str:
    """The message of an error body in ``dialect``'s shape (asserting the shape, and a message)."""
    assert isinstance(obj, dict), f"an error body that is not an object: {obj!r}"
    if dialect == "anthropic":
        assert obj.get("type") == "error" and isinstance(obj.get("error"), dict), f"not an Anthropic error: {obj}"
        _string(obj["error"].get("type"), "error.type")
        message = _string(obj["error"].get("message"), "error.message")
    elif dialect == "ollama":
        message = _string(obj.get("error"), "error")
    else:
        assert isinstance(obj.get("error"), dict), f"not an OpenAI error: {obj}"
        _string(obj["error"].get("type"), "error.type")
        message = _string(obj["error"].get("message"), "error.message")
    assert message.strip(), f"an error without a message: {obj}"
    return message


def _sse(raw: bytes) -> list[tuple[str | None, bytes]]:
    """fastroute's own SSE: whole events, ``event:`` then ``data:`` lines."""
    assert raw.endswith(b"\n\n"), f"the stream does not end with a whole event: {raw[-200:]!r}"
    out = []
    for block in raw[:-2].split(b"\n\n"):
        name, data = None, None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                assert data is None, f"two data lines in one event: {block!r}"
                data = line[6:]
            else:
                assert line.startswith(b":"), f"an odd line in the stream: {line!r}"
        assert data is not None, f"an event without data: {block!r}"
        out.append((name, data))
    assert out, "an empty stream"
    return out


def _calls(pending: dict[int, list[Any]]) -> list[tuple[str, Any]]:
    return [(name, args) for _, (name, args) in sorted(pending.items())]


def read_stream(dialect: str, raw: bytes) -> Read:
    if dialect == "ollama":
        assert raw.endswith(b"\n"), f"the stream does not end with a whole line: {raw[-200:]!r}"
        lines = [_json(line, "an NDJSON line") for line in raw[:-1].split(b"\n")]
        last, read = lines[-1], Read()
        for line in lines[:-1]:
            assert isinstance(line, dict) and "error" not in line and line.get("done") is False, f"odd line: {line}"
            message = line["message"]
            read.text += _string(message.get("content"), "message.content")
            for c in message.get("tool_calls") or ():
                assert isinstance(c["function"]["arguments"], dict), f"arguments not an object: {c}"
                read.tools.append((_string(c["function"]["name"], "name"), c["function"]["arguments"]))
        if "error" in last:
            read.error = error_of(dialect, last)
        else:
            assert last.get("done") is True, f"the stream ends without its final line: {last}"
        return read
    events = _sse(raw)
    read = Read()
    if dialect == "openai":
        *body, (_, last) = events
        calls: dict[int, list[Any]] = {}
        for _, data in body:
            assert data != b"[DONE]", "[DONE] before the end"
            chunk = _json(data, "a chunk")
            assert isinstance(chunk, dict) and "error" not in chunk and chunk.get("object") == \
                "chat.completion.chunk", f"an odd chunk: {chunk}"
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if delta.get("content") is not None:
                    read.text += _string(delta["content"], "delta.content")
                for tc in delta.get("tool_calls") or ():
                    index = tc["index"]
                    if "id" in tc:
                        assert index not in calls, f"tool call {index} started twice"
                        calls[index] = [_string(tc["function"]["name"], "name"), ""]
                    assert index in calls, f"arguments for tool call {index}, never started"
                    calls[index][1] += _string(tc["function"].get("arguments", ""), "arguments")
        if last != b"[DONE]":
            read.error = error_of(dialect, _json(last, "the last event"))
        read.tools = _calls(calls)
        return read
    objs = []
    for name, data in events:
        obj = _json(data, "an event")
        assert isinstance(obj, dict) and obj.get("type") == name, f"event {name!r} carries {obj}"
        objs.append(obj)
    *body, last = objs
    if dialect == "anthropic":
        blocks: dict[int, list[Any]] = {}
        for obj in body:
            assert obj["type"] != "error", "an error before the end"
            if obj["type"] == "content_block_start":
                assert obj["index"] == len(blocks), f"block indexes with a gap: {obj['index']} after {len(blocks)}"
                block = obj["content_block"]
                blocks[obj["index"]] = [block["type"], block.get("name"), ""]
            elif obj["type"] == "content_block_delta":
                delta = obj["delta"]
                if delta["type"] == "text_delta":
                    read.text += _string(delta["text"], "text_delta.text")
                elif delta["type"] == "input_json_delta":
                    blocks[obj["index"]][2] += _string(delta["partial_json"], "partial_json")
        if last["type"] == "error":
            read.error = error_of(dialect, last)
        else:
            assert last["type"] == "message_stop", f"the stream ends with {last['type']}"
        read.tools = _calls({i: [b[1], b[2] or "{}"] for i, b in blocks.items() if b[0] == "tool_use"})
        return read
    # responses
    assert [o["sequence_number"] for o in objs] == list(range(len(objs))), "sequence numbers with gaps"
    assert objs[0]["type"] == "response.created", f"the stream starts with {objs[0]['type']}"
    assert not any(o["type"] == "response.failed" for o in body), "response.failed before the end"
    if last["type"] == "response.failed":
        read.error = _string(last["response"]["error"]["message"], "response.error.message")
        return read
    assert last["type"] in ("response.completed", "response.incomplete"), f"the stream ends with {last['type']}"
    return read_json("responses", orjson.dumps(last["response"]))


def read_json(dialect: str, raw: bytes) -> Read:
    obj = _json(raw, "the answer")
    assert isinstance(obj, dict), f"the answer is not an object: {obj!r}"
    read = Read()
    if dialect == "openai":
        assert obj.get("object") == "chat.completion", f"not a chat.completion: {obj}"
        message = obj["choices"][0]["message"]
        read.text = _string(message.get("content") or "", "message.content")
        read.tools = [(_string(c["function"]["name"], "name"), _string(c["function"]["arguments"], "arguments"))
                      for c in message.get("tool_calls") or ()]
    elif dialect == "anthropic":
        assert obj.get("type") == "message" and isinstance(obj.get("content"), list), f"not a message: {obj}"
        read.text = "".join(_string(b["text"], "text") for b in obj["content"] if b["type"] == "text")
        read.tools = [(b["name"], b["input"]) for b in obj["content"] if b["type"] == "tool_use"]
    elif dialect == "responses":
        assert obj.get("object") == "response" and isinstance(obj.get("output"), list), f"not a response: {obj}"
        for item in obj["output"]:
            if item["type"] == "message":
                read.text += "".join(_string(c["text"], "output_text") for c in item["content"]
                                     if c["type"] == "output_text")
            elif item["type"] == "function_call":
                read.tools.append((item["name"], _string(item["arguments"], "arguments")))
    else:
        assert isinstance(obj.get("message"), dict) and obj.get("done") is True, f"not an Ollama answer: {obj}"
        read.text = _string(obj["message"].get("content"), "message.content")
        read.tools = [(c["function"]["name"], c["function"]["arguments"])
                      for c in obj["message"].get("tool_calls") or ()]
    return read


def read_reply(dialect: str, reply: Reply) -> Read:
    """The reply as the client reads it; asserts it is well formed in the client's dialect."""
    if reply.status != 200:
        assert 400 <= reply.status, f"status {reply.status}"
        assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
        return Read(error=error_of(dialect, _json(reply.body, "the error body")))
    return read_stream(dialect, reply.body) if reply.stream else read_json(dialect, reply.body)


def check_logged(f: Fuzzed, reply: Reply, read: Read) -> dict[str, Any]:
    request_id = reply.headers.get("x-request-id")
    assert request_id, f"a reply without x-request-id: {reply.status} {reply.body[:200]!r}"
    entry = f.log.entry(request_id)
    if read.error is None:
        assert entry["status"] == 200 and entry["error"] is None, \
            f"a correct answer logged as status {entry['status']}, error {entry['error']!r}"
    else:
        assert entry["error"], f"an error the client saw ({read.error!r}) is not logged as one: {entry['status']}"
        if reply.status != 200:
            assert entry["status"] == reply.status, f"logged {entry['status']}, answered {reply.status}"
        else:
            assert entry["status"] >= 500, f"a stream that ended in an error logged with status {entry['status']}"
    return entry


def batch(f: Fuzzed, jobs: list[Any]) -> None:
    """Run one batch of checks at once (they are independent requests), then ask for /health."""
    failures = [exc for exc in (fut.exception() for fut in [f.pool.submit(job) for job in jobs]) if exc]
    health(f)
    if failures:
        raise failures[0]


# ── client bodies ───────────────────────────────────────────────────────────

def check_client_body(f: Fuzzed, dialect: str, case: fs.Mutated) -> None:
    reply = post(f, dialect, fs.dumps(case.body))
    read = read_reply(dialect, reply)
    if reply.status != 200:
        assert reply.status < 500, f"status {reply.status}: {read.error}"
    else:
        provider = reply.headers.get("x-router-provider", "")
        assert provider, "a 200 without x-router-provider"
        asked = case.body.get("stream")
        if asked is None:  # left out (null is left out too): Ollama streams by default, the others do not
            asked = dialect == "ollama"
        assert reply.stream == asked, f"asked for stream={asked!r}, got a {'stream' if reply.stream else 'JSON'}"
        if provider.startswith("fz-"):
            assert read.error is None and read.text == CANNED.text, \
                f"the upstream said {CANNED.text!r}, the client read {read}"
        assert read.error is None, f"a stream that ended in an error: {read.error}"
    check_logged(f, reply, read)


@pytest.mark.parametrize("dialect", CLIENTS)
@settings(max_examples=fs.examples(15))
@given(cases=st.data())
def test_client_bodies(fuzzed: Fuzzed, dialect: str, cases: st.DataObject) -> None:
    drawn = cases.draw(st.lists(fs.request_bodies(dialect, REQUEST_MODELS), min_size=1, max_size=6))
    batch(fuzzed, [lambda case=case: check_client_body(fuzzed, dialect, case) for case in drawn])


RAW_BODIES = [b"", b"{", b"not json", b"\xff\xfe\x00", b"[]", b"null", b"5", b'"a string"',
              b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}',
              b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
              b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "seed": 123456789012345678901234}',
              b'{"model": "echo", "model": "echo", "messages": []}', b'{"model": "echo"}' + b" " * 10 + b"trailing",
              b'{"model": "echo", "input": "hi", "messages": [{"role": "user", "content": "hi"}]}',
              b'{"model": "echo", "messages": ' + b"[" * 1100 + b"]" * 1100 + b"}",
              b'{"model": "echo", "messages": [{"role": "user", "content": ' + b"[" * 300 + b"]" * 300 + b"}]}",
              b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
              b'"function": {"name": "f", "parameters": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}}]}",
              b'{"model": "echo", "input": [{"role": "user", "content": "hi"}], "instructions": ' + b"[" * 600
              + b"]" * 600 + b"}"]


@pytest.mark.parametrize("dialect", CLIENTS)
@settings(max_examples=fs.examples(5))
@given(bodies=st.lists(st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64)), min_size=1, max_size=6),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_raw_bodies(fuzzed: Fuzzed, dialect: str, bodies: list[bytes], content_type: str) -> None:
    """Bytes that are not a body of the dialect at all: a 4xx in its error shape (or an answer)."""
    def check(raw: bytes) -> None:
        reply = post(fuzzed, dialect, raw, content_type)
        read = read_reply(dialect, reply)
        assert reply.status < 500, f"status {reply.status} for {raw[:100]!r}: {read.error}"
        assert reply.status != 200 or read.error is None, f"a 200 that ended in an error: {read.error}"
        check_logged(fuzzed, reply, read)

    batch(fuzzed, [lambda raw=raw: check(raw) for raw in bodies])


# ── upstream answers ────────────────────────────────────────────────────────

def client_body(dialect: str, model: str, stream: bool) -> dict[str, Any]:
    """A plain request in the client's dialect, offering a tool (so tool calls are expected)."""
    tool = {"type": "object", "properties": {"city": {"type": "string"}}}
    if dialect == "anthropic":
        return {"model": model, "max_tokens": 100, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t", "input_schema": tool}]}
    if dialect == "responses":
        return {"model": model, "input": "hi", "stream": stream, "store": False,
                "tools": [{"type": "function", "name": "t", "parameters": tool}]}
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "t", "parameters": tool}}]}
    if dialect == "openai" and stream:  # else the usage chunk fastroute asks for is hidden from the client
        body["stream_options"] = {"include_usage": True}
    return body


def check_upstream_answer(f: Fuzzed, dialect: str, answer: fs.UpstreamAnswer, logged: bool = True) -> None:
    """``logged``: a broken answer passed through must be logged as an error."""
    token = f"t{next(f.tokens)}"
    f.upstream.script(token, answer)
    reply = post(f, dialect, orjson.dumps(client_body(dialect, PREFIX[answer.fmt] + token, answer.stream)))
    assert token not in f.upstream.scripts, "fastroute never called the upstream"
    passthrough = dialect == answer.fmt
    if passthrough and reply.status == 200:  # the fast path: the bytes as the upstream sent them
        assert reply.body == answer.body, f"passed through, changed: {reply.body[:300]!r}"
        entry = f.log.entry(reply.headers["x-request-id"])
        assert entry["status"] == 200
        if answer.intact:
            assert entry["error"] is None, f"an intact answer passed through is logged as {entry['error']!r}"
        elif answer.must_fail and logged:
            assert entry["error"], f"a broken answer ({answer.changes}) passed through is logged as a success"
        return
    read = read_reply(dialect, reply)
    check_logged(f, reply, read)
    if answer.status != 200:
        expect = answer.status if answer.status < 500 else 502
        assert reply.status == expect and read.error, f"upstream {answer.status}: the client got {reply.status}"
        return
    if answer.intact:
        assert read.error is None, f"an intact answer became an error: {read.error}"
        assert reply.status == 200 and reply.stream == answer.stream
        plan = answer.plan
        assert (read.text, read.calls()) == (plan.text, [(n, a) for _, n, a in plan.calls]), \
            f"the client read {read}, the upstream said {plan}"
        return
    if read.error is not None:  # a stream's error is its last event, after a 200; an answer's is a 502
        assert reply.status == (200 if answer.stream else 502), f"an upstream oddity answered {reply.status}"
        assert "internal error" not in read.error, f"fastroute failed on it: {read.error}"
    else:
        assert not answer.must_fail, f"a broken answer ({answer.changes}) reached the client as a correct one"


def answers_for(dialect: str, passthrough: bool) -> st.SearchStrategy[fs.UpstreamAnswer]:
    if passthrough:
        return fs.upstream_answers(fmt=dialect)
    formats = [fmt for fmt in fs.PROVIDER_FORMATS if fmt != dialect]
    return st.sampled_from(formats).flatmap(lambda fmt: fs.upstream_answers(fmt=fmt))


@pytest.mark.parametrize("dialect", CLIENTS)
@settings(max_examples=fs.examples(20))
@given(data=st.data())
def test_upstream_answers_translated(fuzzed: Fuzzed, dialect: str, data: st.DataObject) -> None:
    answers = data.draw(st.lists(answers_for(dialect, False), min_size=1, max_size=6))
    batch(fuzzed, [lambda a=a: check_upstream_answer(fuzzed, dialect, a) for a in answers])


@pytest.mark.parametrize("dialect", fs.PROVIDER_FORMATS)
@settings(max_examples=fs.examples(12))
@given(data=st.data())
def test_upstream_answers_passed_through(fuzzed: Fuzzed, dialect: str, data: st.DataObject) -> None:
    answers = data.draw(st.lists(answers_for(dialect, True), min_size=1, max_size=6))
    batch(fuzzed, [lambda a=a: check_upstream_answer(fuzzed, dialect, a) for a in answers])


@pytest.mark.parametrize("dialect", fs.PROVIDER_FORMATS)
@settings(max_examples=fs.examples(6), phases=[Phase.generate], report_multiple_bugs=False)
@given(data=st.data())
def test_broken_answers_passed_through_are_logged_as_errors(fuzzed: Fuzzed, dialect: str,
                                                            data: st.DataObject) -> None:
    answers = data.draw(st.lists(answers_for(dialect, True).filter(lambda a: a.must_fail and a.status == 200),
                                 min_size=1, max_size=6))
    batch(fuzzed, [lambda a=a: check_upstream_answer(fuzzed, dialect, a) for a in answers])


def error_answers(fmt: str, bodies: list[bytes]) -> list[fs.UpstreamAnswer]:
    return [fs.UpstreamAnswer(fmt, stream, [body], CANNED, status=status, intact=False, must_fail=True)
            for body in bodies for status, stream in ((422, False), (503, True))]


@pytest.mark.parametrize("dialect", CLIENTS)
@pytest.mark.parametrize("fmt", fs.PROVIDER_FORMATS)
def test_upstream_error_bodies(fuzzed: Fuzzed, dialect: str, fmt: str) -> None:
    """Every odd error body at a 4xx and a 5xx, from each format to each client dialect: the client
    gets its own dialect's error shape (with a message) and the status the pipeline promises."""
    batch(fuzzed, [lambda a=a: check_upstream_answer(fuzzed, dialect, a) for a in error_answers(fmt, fs.ODD_ERROR_BODIES)])


def test_every_exchange_ended_once(fuzzed: Fuzzed) -> None:
    """After all of the above: nothing in flight, and no request with two log lines."""
    health(fuzzed)
    deadline = time.monotonic() + 10
    while True:
        metrics = fuzzed.client.get("/metrics").text
        gauge = [line for line in metrics.splitlines() if line.startswith("fastroute_in_flight_requests")]
        if all(line.rsplit(" ", 1)[1] in ("0", "0.0") for line in gauge) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert gauge and all(line.rsplit(" ", 1)[1] in ("0", "0.0") for line in gauge), gauge
    fuzzed.log.read()
    doubles = {k: len(v) for k, v in fuzzed.log.entries.items() if len(v) > 1}
    assert not doubles, f"requests logged more than once: {doubles}"
