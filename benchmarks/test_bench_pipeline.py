"""One request's path, stage by stage: what each step of ``POST /v1/chat/completions`` costs in process.

    pytest benchmarks/test_bench_pipeline.py --benchmark-group-by=group

Every stage is its own group (``stage-<name>``), on two bodies where size matters: ``short`` (a
system and a user message, ~130 bytes) and ``agent`` (built below: 20 tools with JSON-schema
parameters and 30 messages of tool calls and tool results, ~75 KB, as Claude Code and Codex send),
in the OpenAI dialect, and in the Anthropic one where the stage has an Anthropic side.
Where a stage has a Cython twin (``fastroute._speedups``) it runs on both (``impl``: python,
compiled; compiled skips when not built or under ``FASTROUTE_NO_EXTENSIONS=1``).

 1. ``stage-decode``: ``orjson.loads`` and the nesting check (``limits.check_depth``) of the raw body,
    as the server does before dispatching (a body under 2 bytes a level is not walked at all).
 2. ``stage-shape``: ``check_request`` of the dialect, on the points ``test_bench_shape.py`` does not
    measure (OpenAI's agent body, Anthropic's short one; it has OpenAI's short chat and Claude Code's body).
 3. ``stage-parse``: ``parse_request`` to the canonical model (OpenAI, Anthropic; the shape check included).
 4. ``stage-classify``: ``request_text`` and ``run_all`` with a 50-tag keyword classifier.
 5. ``stage-route``: ``Router.route`` over 20 prefix rules (the request's rule is the 19th),
    uncached (no ``steady``) and cached (``steady=lambda: True``, as the server runs it).
 6. ``stage-passthrough``: the same-dialect body sent upstream: the model as it came, renamed, and
    renamed on a streamed request (``stream_options.include_usage`` added).
 7. ``stage-lean-encode``: the lean client's request bytes: ``header_block`` built each time vs
    ``HeaderBlocks().get`` (kept), then ``encode_request`` with the body.
 8. ``stage-read-answer``: ``pipeline.read_answer`` of an upstream ``chat.completion`` (a short
    text answer; the agent's: text and two tool calls).
 9. ``stage-headers``: ``Pipeline._headers`` of an exchange (plain; with every optional header).
10. ``stage-record-*``: ``Recorder.start`` / ``classified`` / ``routed`` / ``complete`` (an EventBus and a
    Metrics labelled as the server labels them, no log), each ``unwatched`` (no subscriber, no
    forwarder) and ``forwarded`` (a forwarder takes every event, so each is encoded when published);
    ``complete`` with a ``RequestLog`` in tmp_path (its writer thread closed at the end; fixed
    rounds, so its queue never fills); and ``Metrics.observe`` of the log entry alone.
11. ``stage-dispatch``: ``Pipeline.dispatch`` of an OpenAI request to an OpenAI provider whose upstream
    client answers from memory (the real provider, router, health, recorder; the fast path:
    pass-through body, ``read_answer`` on the side).  ``bare``: no classifier, so the request is never
    parsed; ``classified``: the 50-tag keyword classifier, so it is parsed and classified too.
    **One round is 100 dispatches**, awaited one after another in one ``run_until_complete`` on a
    uvloop loop (asyncio's when uvloop is missing); ``extra_info["us_per_request"]`` is a round's
    median divided by 100.

Each benchmark asserts what its stage produced (the tags, the route, the usage read, the
lines logged ...), so none can pass while measuring nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import ModuleType
from typing import Any

import orjson
import pytest
from support import twin

from fastroute import _speedups
from fastroute.canonical import ChatRequest, Usage
from fastroute.config import config_from_dict
from fastroute.formats import anthropic, openai
from fastroute.formats.shape import built_with
from fastroute.limits import MAX_JSON_DEPTH, check_depth
from fastroute.pipeline import Answer, Exchange, Pipeline, read_answer, request_needs
from fastroute.pricing import Pricing
from fastroute.providers import build_providers
from fastroute.providers.lean.client import (
    HeaderBlocks,
    Target,
    encode_request,
    header_block,
)
from fastroute.providers.transport import Reply, Timeouts
from fastroute.recording.events import EventBus
from fastroute.recording.log import RequestLog
from fastroute.recording.metrics import Metrics
from fastroute.recording.recorder import Recorder
from fastroute.routing import Router
from fastroute.routing.catalogue import Catalogue
from fastroute.routing.classifiers import build_classifiers, request_text, run_all
from fastroute.routing.health import Health

SIZES = ["short", "agent"]
BATCH = 100  # dispatches a round in stage-dispatch
KEY_ENV = "FASTROUTE_BENCH_UP_KEY"

# ── the bodies ────────────────────────────────────────────────────────────

SHORT = {"model": "bench-model", "messages": [{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": "Say hello."}], "max_tokens": 16}
SHORT_ANTHROPIC = {"model": "bench-model", "system": "You are terse.", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello."}]}

_TOOL_NAMES = ["Bash", "Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "LS", "WebFetch", "WebSearch",
               "TodoWrite", "Task", "NotebookEdit", "NotebookRead", "ExitPlanMode", "BashOutput", "KillShell",
               "SlashCommand", "AskUserQuestion", "Skill"]
_WORDS = ["the", "file", "path", "command", "output", "line", "pattern", "match", "directory", "result",
          "error", "value", "when", "use", "this", "tool", "to", "run", "read", "write", "edit", "search",
          "a", "an", "of", "in", "for", "with", "on", "must", "should", "never", "always", "only", "before",
          "after", "absolute", "relative", "string", "number", "boolean", "array", "object", "optional",
          "required", "default", "limit", "offset"]
_CODE = [
    "def {a}({b}, {c}):\n    return {b}.{c}\n",
    "    if {a} is None:\n        raise ValueError(\"missing {a}\")\n",
    "for {a} in {b}:\n    {c}.append({a})\n",
    "class {A}Handler:\n    def __init__(self, {b}):\n        self.{b} = {b}\n",
    "    {a} = self.{b}.get(\"{c}\", {{}})\n",
    "import {a}\nfrom {b} import {c}\n",
]
_IDENTS = ["request", "response", "payload", "client", "user_id", "items", "config", "result", "session",
           "handler", "retries", "timeout", "buffer", "row", "cursor", "logger", "path", "headers"]


def _prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 18))).capitalize() + ". "
        out.append(sentence)
        n += len(sentence)
    return "".join(out)


def _code(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        a, b, c = rng.sample(_IDENTS, 3)
        line = rng.choice(_CODE).format(a=a, b=b, c=c, A=a.capitalize())
        out.append(line)
        n += len(line)
    return "".join(out)


def _schema(rng: random.Random, i: int) -> dict[str, Any]:
    props: dict[str, Any] = {
        "command" if i % 2 else "file_path": {"type": "string", "description": _prose(rng, 120)},
        "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)",
                    "minimum": 0, "maximum": 600000},
        "mode": {"type": "string", "enum": ["default", "append", "replace", "dry_run"],
                 "description": _prose(rng, 60)},
        "options": {"type": "object", "description": _prose(rng, 50), "additionalProperties": False,
                    "properties": {"recursive": {"type": "boolean"}, "depth": {"type": "integer", "minimum": 1},
                                   "ignore": {"type": "array", "items": {"type": "string"}}}},
    }
    if i % 3 == 0:
        props["edits"] = {"type": "array", "minItems": 1, "description": _prose(rng, 60), "items": {
            "type": "object", "required": ["old_string", "new_string"], "additionalProperties": False,
            "properties": {"old_string": {"type": "string"}, "new_string": {"type": "string"},
                           "replace_all": {"type": "boolean", "default": False}}}}
    return {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": props,
            "required": [next(iter(props))], "additionalProperties": False}


def _agent() -> tuple[dict[str, Any], dict[str, Any]]:
    """The same agent conversation in the OpenAI and the Anthropic dialect: 20 tools, a long system
    prompt, a task, 14 rounds of (assistant text + tool call, tool result) and a last user message."""
    rng = random.Random(20250101)
    system = "You are an interactive agent that helps users with software engineering tasks.\n" + _prose(rng, 6000)
    tools = [(name, _prose(rng, 700), _schema(rng, i)) for i, name in enumerate(_TOOL_NAMES)]
    task = "The unit test in tests/test_session.py fails with a traceback; find the cause and fix it. " + _prose(rng, 300)
    rounds = []
    for i in range(14):
        name = ["Read", "Grep", "Bash", "Edit"][i % 4]
        args = {"file_path": f"/repo/src/module_{i}.py", "mode": "default", "options": {"depth": 2}}
        if name == "Bash":
            args = {"command": "python -m pytest tests/test_session.py -x -q", "timeout": 120000}
        result = _code(rng, 1700)
        if i == 6:
            result = "Traceback (most recent call last):\n" + result
        rounds.append((f"call_{i:02d}_{rng.getrandbits(48):012x}", name, args,
                       "Let me look at " + _prose(rng, 80), result))
    last = "Good. Now run pytest again and summarise what changed."

    oa_messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    an_messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
    for call_id, name, args, text, result in rounds:
        oa_messages.append({"role": "assistant", "content": text, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]})
        oa_messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        an_messages.append({"role": "assistant", "content": [{"type": "text", "text": text},
                                                             {"type": "tool_use", "id": call_id, "name": name,
                                                              "input": args}]})
        an_messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id,
                                                         "content": result}]})
    oa_messages.append({"role": "user", "content": last})
    an_messages[-1]["content"].append({"type": "text", "text": last})
    oa = {"model": "bench-model", "messages": oa_messages, "max_tokens": 8192, "stream": False,
          "tools": [{"type": "function", "function": {"name": n, "description": d, "parameters": s}}
                    for n, d, s in tools],
          "tool_choice": "auto", "parallel_tool_calls": True, "temperature": 1}
    an = {"model": "bench-model", "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
          "messages": an_messages, "max_tokens": 8192, "stream": False, "metadata": {"user_id": "user_bench"},
          "tools": [{"name": n, "description": d, "input_schema": s} for n, d, s in tools]}
    return oa, an


AGENT, AGENT_ANTHROPIC = _agent()
RAW = {"short": orjson.dumps(SHORT), "agent": orjson.dumps(AGENT)}
RAW_ANTHROPIC = {"short": orjson.dumps(SHORT_ANTHROPIC), "agent": orjson.dumps(AGENT_ANTHROPIC)}
BODY = {"short": SHORT, "agent": AGENT}
BODY_ANTHROPIC = {"short": SHORT_ANTHROPIC, "agent": AGENT_ANTHROPIC}
assert 40_000 <= len(RAW["agent"]) <= 80_000, len(RAW["agent"])
assert len(AGENT["tools"]) == 20 and len(AGENT["messages"]) == 31  # 30 after the system prompt


def _kb(raw: bytes) -> str:
    return f"{len(raw) / 1024:.1f} KB"


# ── the configuration: 20 prefix rules, a 50-tag keyword classifier ────────

FILLER = ["ka", "lo", "mi", "zu", "re", "ta", "vex", "qua", "bri", "den", "sol", "mar", "tin", "gor", "plu",
          "fen", "ab", "el", "ish", "oth"]
_frng = random.Random(7)
TAGS: dict[str, list[str]] = {"greeting": ["hello", "good morning"], "code": ["traceback", "stack trace", "refactor"],
                              "testing": ["pytest", "unit test"], "tools": ["tool_use", "function call"]}
while len(TAGS) < 50:
    TAGS[f"tag{len(TAGS)}"] = ["".join(_frng.choice(FILLER) for _ in range(3)) + "x" for _ in range(4)]
EXPECTED_TAGS = {"short": ["greeting"], "agent": ["code", "testing"]}

PROVIDERS = [{"name": "up", "format": "openai", "base_url": "http://up.test/v1", "api_key_env": KEY_ENV},
             *({"name": f"p{i}", "format": "openai", "base_url": f"http://p{i}.test/v1"} for i in range(5))]
ROUTERS = [*({"type": "prefix", "model_prefix": f"family{i}-", "provider": f"p{i % 5}", "rewrite_model": f"model-{i}"}
             for i in range(18)),
           {"type": "prefix", "model_prefix": "bench-", "provider": "up", "rewrite_model": "upstream-model"},
           {"type": "prefix", "model_prefix": "", "provider": "p0"}]
BENCH_RULE = 18


def _config(classify: bool = True) -> Any:
    data: dict[str, Any] = {"providers": PROVIDERS, "routers": ROUTERS}
    if classify:
        data["classifiers"] = {"keyword": {"enabled": True, "tags": TAGS}}
    return config_from_dict(data)


# ── the twins ─────────────────────────────────────────────────────────────

@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


def _shape_module(impl: str) -> ModuleType:
    return twin(impl, _speedups.shape_c, _speedups.shape_py)


def _keyword_matcher(impl: str) -> type:
    return twin(impl, _speedups.KeywordMatcherC, _speedups.KeywordMatcherPy)


# ── 1-4: reading the request ──────────────────────────────────────────────

@pytest.mark.parametrize("size", SIZES)
def test_decode(benchmark, impl: str, size: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """``orjson.loads`` + ``check_depth``; ``impl`` is the nesting walk's (``_speedups.shape.nests_deeper``)."""
    monkeypatch.setattr(_speedups, "shape", _shape_module(impl))  # check_depth reads it at each call
    raw = RAW[size]
    benchmark.group = f"stage-decode-{size} ({_kb(raw)})"

    def decode() -> Any:
        body = orjson.loads(raw)
        check_depth(body, MAX_JSON_DEPTH, len(raw))
        return body

    assert benchmark(decode) == BODY[size]


@pytest.mark.parametrize("dialect, size", [(openai, "agent"), (anthropic, "short")], ids=["openai-agent", "anthropic-short"])
def test_shape(benchmark, impl: str, dialect: ModuleType, size: str,  # type: ignore[no-untyped-def]
               monkeypatch: pytest.MonkeyPatch) -> None:
    """The dialect's ``check_request``, its REQUEST built from ``impl``'s classes."""
    monkeypatch.setattr(dialect, "REQUEST", built_with(dialect.REQUEST, _shape_module(impl)))
    body = (BODY if dialect is openai else BODY_ANTHROPIC)[size]
    benchmark.group = f"stage-shape-{dialect.NAME}-{size}"
    assert benchmark(dialect.check_request, body) == ("bench-model", False)


@pytest.mark.parametrize("dialect", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize("size", SIZES)
def test_parse(benchmark, dialect: ModuleType, size: str) -> None:  # type: ignore[no-untyped-def]
    body = (BODY if dialect is openai else BODY_ANTHROPIC)[size]
    benchmark.group = f"stage-parse-{size}"
    request = benchmark(dialect.parse_request, body)
    assert request.model == "bench-model" and request.system
    if size == "agent":
        assert len(request.tools) == 20 and sum(len(m.tool_calls) for m in request.messages) == 14
        assert sum(m.role == "tool" for m in request.messages) == 14


def _request(size: str) -> ChatRequest:
    return openai.parse_request(BODY[size])


@pytest.mark.parametrize("size", SIZES)
def test_classify(benchmark, impl: str, size: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """``request_text`` + ``run_all``: the classifier built from the config, on ``impl``'s matcher."""
    monkeypatch.setattr(_speedups, "KeywordMatcher", _keyword_matcher(impl))  # read when the classifier is built
    classifiers, _ = build_classifiers(_config())
    assert type(classifiers[0].matcher) is _keyword_matcher(impl)
    request = _request(size)
    benchmark.group = f"stage-classify-{size}"
    benchmark.extra_info["text_chars"] = len(request_text(request))
    assert benchmark(lambda: run_all(classifiers, request_text(request))) == EXPECTED_TAGS[size]


# ── 5-9: routing, the body upstream, the answer ───────────────────────────

@pytest.mark.parametrize("cache", ["uncached", "cached"])
@pytest.mark.parametrize("size", SIZES)
def test_route(benchmark, cache: str, size: str) -> None:  # type: ignore[no-untyped-def]
    """The route of the request's model, tags and needs (agent: tags found, needs ``tools``)."""
    cfg = _config()
    router = Router(cfg, build_providers(cfg, None), steady=(lambda: True) if cache == "cached" else None)
    tags, needs = EXPECTED_TAGS[size], request_needs(_request(size))
    benchmark.group = f"stage-route-{size}"
    route = benchmark(router.route, "bench-model", tags, needs)
    assert (route.provider, route.model, route.rule) == ("up", "upstream-model", BENCH_RULE)
    assert len(router._routes) == (cache == "cached")


@pytest.mark.parametrize("model", ["as-sent", "renamed", "renamed-stream"])
@pytest.mark.parametrize("size", SIZES)
def test_passthrough(benchmark, model: str, size: str) -> None:  # type: ignore[no-untyped-def]
    """``as-sent``: the model as the client named it; ``renamed``: the rule's; ``-stream``: with
    ``stream: true`` (usage asked for), the body otherwise the same."""
    stream = model.endswith("-stream")
    body = {**BODY[size], "stream": True} if stream else BODY[size]
    target = "bench-model" if model == "as-sent" else "upstream-model"
    benchmark.group = f"stage-passthrough-{size}"
    out, tap = benchmark(openai.passthrough, body, target, stream, "up")
    sent = orjson.loads(out)
    assert sent["model"] == target and sent["messages"] == body["messages"]
    if stream:  # the usage is asked for, and read on the side by the tap
        assert sent["stream_options"] == {"include_usage": True} and tap is not None


@pytest.fixture
def up_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "sk-bench-" + "0123456789abcdef" * 3
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.mark.parametrize("blocks", ["header_block", "HeaderBlocks.get"])
@pytest.mark.parametrize("size", SIZES)
def test_lean_encode(benchmark, blocks: str, size: str, up_key: str) -> None:  # type: ignore[no-untyped-def]
    """The bytes the lean client writes: request line and host (pre-encoded per URL), headers, body."""
    provider = build_providers(_config(), None)["up"]
    headers = provider.headers(None, False)  # content-type, accept, authorization: what post_raw sends
    start = Target(None, b"/v1/chat/completions", b"up.test", None).post  # type: ignore[arg-type]
    body, _ = openai.passthrough(BODY[size], "upstream-model", False, "up")
    benchmark.group = f"stage-lean-encode-{size}"
    if blocks == "header_block":
        def encode() -> bytes:
            return encode_request(start, header_block(headers, None), body)
    else:
        kept = HeaderBlocks()

        def encode() -> bytes:
            return encode_request(start, kept.get(headers, None), body)
    data = benchmark(encode)
    assert data.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: up.test\r\n")
    assert f"authorization: Bearer {up_key}\r\n".encode() in data and data.endswith(b"\r\n\r\n" + body)


def _answer(size: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": "Hello."}
    usage: dict[str, Any] = {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}
    if size == "agent":
        message = {"role": "assistant", "content": "The session is closed twice; " + _prose(random.Random(3), 600),
                   "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                       "name": "Edit", "arguments": orjson.dumps({"file_path": f"/repo/src/module_{i}.py",
                                                                  "old_string": _code(random.Random(i), 300),
                                                                  "new_string": _code(random.Random(i + 9), 300)}
                                                                 ).decode()}} for i in range(2)]}
        usage = {"prompt_tokens": 15873, "completion_tokens": 412, "total_tokens": 16285,
                 "prompt_tokens_details": {"cached_tokens": 15360}, "completion_tokens_details": {"reasoning_tokens": 128}}
    return orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600,
                         "model": "upstream-model", "system_fingerprint": "fp_bench",
                         "choices": [{"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": "tool_calls" if size == "agent" else "stop"}],
                         "usage": usage})


ANSWER = {size: _answer(size) for size in SIZES}
USAGE = {"short": (14, 3, 0), "agent": (15873, 412, 15360)}


@pytest.mark.parametrize("size", SIZES)
def test_read_answer(benchmark, size: str) -> None:  # type: ignore[no-untyped-def]
    raw = ANSWER[size]
    benchmark.group = f"stage-read-answer-{size} ({_kb(raw)})"
    response = benchmark(read_answer, openai, raw)
    assert response is not None
    u = response.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens) == USAGE[size]
    assert len(response.tool_calls) == (2 if size == "agent" else 0)


def _exchange(size: str) -> Exchange:
    """An exchange as it stands at the end of a request (the agent's: its parsed request attached)."""
    ex = Exchange(id="req_0123456789abcdef", dialect="openai", started=time.perf_counter(),
                  ts_ms=int(time.time() * 1000), requested_model="bench-model", provider="up",
                  sent_model="upstream-model", tags=list(EXPECTED_TAGS[size]), rule=BENCH_RULE,
                  usage=Usage(*USAGE[size][:2], cached_input_tokens=USAGE[size][2]), duration_ms=3.2, ttft_ms=1.1,
                  response_text="Hello." if size == "short" else _prose(random.Random(3), 600),
                  attempts=[{"provider": "up", "model": "upstream-model", "status": 200, "error": None}],
                  request=_request(size))
    return ex


@pytest.mark.parametrize("case", ["plain", "every-header"])
def test_headers(benchmark, case: str) -> None:  # type: ignore[no-untyped-def]
    cfg = _config()
    providers = build_providers(cfg, None)
    pipeline = Pipeline(cfg, providers, Router(cfg, providers))
    ex = _exchange("agent")
    if case == "every-header":
        ex.response_tags = ["refusal"]
        ex.attempts.insert(0, {"provider": "p1", "model": "m", "status": 503, "error": "down"})
        ex.omitted_tools = ["web_search"]
    benchmark.group = "stage-headers"
    headers = benchmark(pipeline._headers, ex)
    assert headers[0] == (b"x-router-provider", b"up") and (b"x-router-request-tags", b"code,testing") in headers
    assert len(headers) == (4 if case == "plain" else 7)


# ── 10: recording ─────────────────────────────────────────────────────────

COSTS = {p["name"]: 1.5 for p in PROVIDERS}


def _metrics(cfg: Any, providers: dict[str, Any]) -> Metrics:
    """Metrics as the server makes them: labels only for names the routing table knows."""
    metrics = Metrics()
    metrics.label_only(Catalogue(cfg, providers))
    return metrics


def _recorder(bus: EventBus, log: RequestLog | None = None) -> Recorder:
    cfg = _config()
    return Recorder(bus, _metrics(cfg, build_providers(cfg, None)), log, Pricing(providers=COSTS, table={}))


def _last_event(bus: EventBus) -> dict[str, Any]:
    """The last event published (the history holds it encoded, or as it was while nobody watched)."""
    event = bus.history[-1]
    return orjson.loads(event) if isinstance(event, (bytes, bytearray, memoryview)) else event


@pytest.mark.parametrize("viewer", ["unwatched", "forwarded"])
@pytest.mark.parametrize("step", ["start", "classified", "routed", "complete"])
@pytest.mark.parametrize("size", SIZES)
def test_record(benchmark, step: str, size: str, viewer: str) -> None:  # type: ignore[no-untyped-def]
    """One recorder call (events on an EventBus, a Metrics, no log); ``complete`` is the end of an
    exchange.  ``forwarded``: a forwarder takes every event (a relay to other workers), so each one
    is encoded as it is published, as it is when a dashboard watches."""
    bus = EventBus()
    forwarded: list[bytes] = []
    if viewer == "forwarded":
        bus.forwarders.append(forwarded.append)
    recorder = _recorder(bus)
    ex = _exchange(size)
    benchmark.group = f"stage-record-{step}"
    call = getattr(recorder, step)
    if step in ("start", "complete"):
        benchmark(call, ex, 1)
    else:
        benchmark(call, ex)
    last = _last_event(bus)
    assert last["type"] == step and last["id"] == ex.id
    assert (orjson.loads(forwarded[-1]) == last) if viewer == "forwarded" else not forwarded
    if step == "complete":
        assert last["usage"]["input_tokens"] == USAGE[size][0]
        assert len(last["messages"]) == min(3, len(ex.request.messages))
        assert b'provider="up"' in recorder.metrics.render()  # type: ignore[union-attr]


@pytest.mark.parametrize("size", SIZES)
def test_record_complete_logged(benchmark, size: str, tmp_path: Any) -> None:  # type: ignore[no-untyped-def]
    """``complete`` with a RequestLog: the entry (every message) queued for the writer thread.  A fixed
    number of rounds, so the queue never fills (a full queue drops, which would be measured instead)."""
    log = RequestLog(tmp_path / "requests.jsonl")
    recorder = _recorder(EventBus(), log)
    ex = _exchange(size)
    calls = 0

    def complete() -> None:
        nonlocal calls
        calls += 1
        recorder.complete(ex, 1)

    benchmark.group = "stage-record-complete-logged"
    try:
        benchmark.pedantic(complete, rounds=2000 if size == "short" else 300, iterations=1, warmup_rounds=10)
    finally:
        log.close()
    assert log.dropped == 0
    lines = (tmp_path / "requests.jsonl").read_bytes().splitlines()
    assert len(lines) == calls
    assert len(orjson.loads(lines[-1])["messages"]) == len(ex.request.messages)


@pytest.mark.parametrize("size", SIZES)
def test_metrics_observe(benchmark, size: str) -> None:  # type: ignore[no-untyped-def]
    recorder = _recorder(EventBus())
    metrics = recorder.metrics
    assert metrics is not None
    entry = recorder.entry(_exchange(size))
    benchmark.group = "stage-record-metrics-observe"
    benchmark(metrics.observe, entry)
    assert b'provider="up"' in metrics.render()


# ── 11: the whole dispatch, in process ────────────────────────────────────

class InProcess:
    """An upstream client answering every POST from memory with one ``chat.completion``."""

    name = "in-process"

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.calls = 0
        self.sent = b""

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply:
        self.calls += 1
        self.sent = body
        return Reply(200, {"content-type": "application/json"}, self.answer)

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Any:
        raise AssertionError("no streams here")

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any:
        raise AssertionError("no discovery here")

    async def aclose(self) -> None:
        pass


def dispatches(benchmark: Any, loop: asyncio.AbstractEventLoop, pipeline: Pipeline,
               size: str) -> tuple[Any, int, float | None]:
    """Rounds of BATCH dispatches of ``BODY[size]``: the last answer, the rounds run, and the median µs
    a request (None under --benchmark-disable), also in ``extra_info["us_per_request"]``."""
    body = BODY[size]
    batches = 0

    async def batch() -> Any:
        nonlocal batches
        batches += 1
        for _ in range(BATCH):
            answer = await pipeline.dispatch(openai, body, None)
        return answer

    answer = benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=30 if size == "short" else 15,
                                iterations=1, warmup_rounds=1)
    us = None
    if benchmark.stats is not None:  # None under --benchmark-disable
        us = benchmark.stats.stats.median / BATCH * 1e6
        benchmark.extra_info["us_per_request"] = round(us, 1)
    return answer, batches, us


@pytest.mark.parametrize("variant", ["bare", "classified"])
@pytest.mark.parametrize("size", SIZES)
def test_dispatch(benchmark, variant: str, size: str, loop: asyncio.AbstractEventLoop,  # type: ignore[no-untyped-def]
                  up_key: str) -> None:
    """One round: 100 ``Pipeline.dispatch`` calls, one after another, in one ``run_until_complete``."""
    cfg = _config(classify=variant == "classified")
    client = InProcess(ANSWER[size])
    providers = build_providers(cfg, client)  # type: ignore[arg-type]
    health = Health(cfg.failover)
    bus = EventBus()
    recorder = Recorder(bus, _metrics(cfg, providers), None, Pricing(providers=COSTS, table={}))
    pipeline = Pipeline(cfg, providers, Router(cfg, providers, health.available, steady=health.steady),
                        health, recorder)
    recorder.metrics.follow_in_flight(lambda: pipeline.in_flight)  # type: ignore[union-attr]
    benchmark.group = f"stage-dispatch-{size}"
    answer, batches, _ = dispatches(benchmark, loop, pipeline, size)
    assert isinstance(answer, Answer) and answer.status == 200 and answer.body == ANSWER[size]
    assert client.calls == BATCH * batches and pipeline.in_flight == 0
    assert orjson.loads(client.sent)["model"] == "upstream-model"
    complete = _last_event(bus)
    assert complete["type"] == "complete" and complete["provider"] == "up" and complete["rule"] == BENCH_RULE
    assert complete["usage"]["input_tokens"] == USAGE[size][0]
    assert complete["tags"] == (EXPECTED_TAGS[size] if variant == "classified" else [])
