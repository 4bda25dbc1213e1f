"""Property-based fuzzing of the parsers, in process (fast): client bodies of the four dialects,
upstream answers and streams of the three provider formats, and the SSE splitters.

Properties:

- a client body is refused with a :class:`RequestError` of a 4xx status whose message names a
  JSON path (one that was changed, when the body was a valid one broken on purpose), or it
  becomes a well-typed :class:`ChatRequest` (every field of the type ``canonical.py`` says) that
  ``fit`` and every provider format's ``render_request`` turn into JSON, or refuse with a 4xx;
- an upstream answer becomes a well-typed :class:`ChatResponse` — exactly the one it carries when
  it is intact — or raises the documented ``ValueError`` (orjson's decode error is one) or an
  :class:`UpstreamError`; never a TypeError, AttributeError, KeyError or IndexError;
- a stream decoder (both implementations, side by side) turns any bytes, split anywhere, into
  well-typed events: exactly the answer when it is intact, and an error event — the last one,
  an :class:`UpstreamError` — when the stream is cut before its end or carries garbage; it never
  raises, and the Python and compiled decoders agree event for event;
- the SSE splitters (both) never raise and agree, however the bytes are split.

Budget and profiles: tests/fuzz_strategies.py; a longer run: docs/testing.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import _speedups
from fastroute.canonical import ChatRequest, ChatResponse, StreamEvent, ToolCall, Usage
from fastroute.config import ProviderConfig
from fastroute.errors import RequestError, UpstreamError
from fastroute.formats import anthropic, ollama, openai, responses
from fastroute.headers import check_model_name
from fastroute.providers import PROVIDER_CLASSES
from fastroute.providers.fit import fit
from tests import fuzz_strategies as fs

try:  # what the server checks before any dialect sees a body (its nesting), when this version has it
    from fastroute.limits import MAX_JSON_DEPTH, check_depth
except ImportError:  # pragma: no cover
    MAX_JSON_DEPTH, check_depth = 0, None

fs.load_profile()
pytestmark = pytest.mark.timeout(fs.timeout(300))

CLIENTS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "responses": responses,
                                  "ollama": ollama}
FORMATS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "ollama": ollama}
PROVIDERS = {fmt: PROVIDER_CLASSES[fmt](ProviderConfig(name=f"p-{fmt}", format=fmt, base_url="http://127.0.0.1:9"),
                                        None) for fmt in FORMATS}
DECODERS = {"openai": "OpenAIStreamDecoder", "anthropic": "AnthropicStreamDecoder", "ollama": "OllamaStreamDecoder"}
IMPLS = {"python": _speedups.decode_py, **({"compiled": _speedups.decode_c} if _speedups.decode_c else {})}
SPLITTERS = {"python": _speedups.SSEDecoderPy,
             **({"compiled": _speedups.SSEDecoderC} if _speedups.SSEDecoderC else {})}


# ── well-typed: every field of the type canonical.py gives it ──────────────

class Mistyped(AssertionError):
    pass


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def well_typed(value: Any, hint: Any, where: str) -> None:
    """Raise :class:`Mistyped` unless ``value`` is of the type ``hint`` (a canonical annotation)."""
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args or type(value) is not str:
            raise Mistyped(f"{where}: {value!r} is not one of {args}")
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                well_typed(value, arg, where)
                return
            except Mistyped:
                continue
        raise Mistyped(f"{where}: {_short(value)} ({type(value).__name__}) is none of {hint}")
    elif origin is list:
        if type(value) is not list:
            raise Mistyped(f"{where}: expected a list, got {type(value).__name__}: {_short(value)}")
        for i, item in enumerate(value):
            well_typed(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        if type(value) is not dict:
            raise Mistyped(f"{where}: expected a dict, got {type(value).__name__}: {_short(value)}")
        for k, v in value.items():
            well_typed(k, args[0], f"{where} key")
            well_typed(v, args[1], f"{where}[{k!r}]")
    elif origin is tuple:
        if type(value) is not tuple or len(value) != len(args):
            raise Mistyped(f"{where}: expected a tuple of {len(args)}, got {_short(value)}")
        for i, (item, arg) in enumerate(zip(value, args)):
            well_typed(item, arg, f"{where}[{i}]")
    elif hint is type(None):
        if value is not None:
            raise Mistyped(f"{where}: expected None, got {_short(value)}")
    elif hint is float:
        if type(value) not in (int, float):
            raise Mistyped(f"{where}: expected a number, got {type(value).__name__}: {_short(value)}")
    elif hint in (int, str, bool):
        if type(value) is not hint:
            raise Mistyped(f"{where}: expected {hint.__name__}, got {type(value).__name__}: {_short(value)}")
    elif dataclasses.is_dataclass(hint):
        if type(value) is not hint:
            raise Mistyped(f"{where}: expected {hint.__name__}, got {type(value).__name__}: {_short(value)}")
        for f in dataclasses.fields(hint):
            well_typed(getattr(value, f.name), _hints(hint)[f.name], f"{where}.{f.name}")
    else:  # pragma: no cover - an annotation this checker does not know yet
        raise NotImplementedError(f"{where}: {hint}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


# ── client bodies ───────────────────────────────────────────────────────────

def _named(path: fs.JSONPath) -> list[str]:
    """The ways an error may name ``path`` (its first two steps): ``messages[1]``, ``messages.1`` ..."""
    head = str(path[0])
    if len(path) == 1:
        return [head]
    second = path[1]
    return [f"{head}[{second}]", f"{head}.{second}"] if isinstance(second, int) else \
        [f"{head}.{second}", f"{head}[{second!r}]", f"{head}['{second}']", f'{head}["{second}"]']


def check_refusal(err: RequestError, case: fs.Mutated, stage: str) -> None:
    status = err.http_status
    assert 400 <= status < 500, f"{stage}: refused with {status} ({type(err).__name__}): {err.message}"
    assert err.message, f"{stage}: a refusal without a message"
    if stage != "parse" or not isinstance(case.body, dict) or any(not path for _, path in case.changes):
        return  # a body made up whole (or not an object) has no changed path to name; fit names fields its own way
    assert not case.valid, f"a valid body was refused: {err.message}"
    said = f"{err.message} {err.param or ''}"
    where = [name for _, path in case.changes if path and str(path[0]).strip() for name in _named(path)]
    assert not where or any(name in said for name in where), \
        f"the refusal names none of the changed paths {where}: {err.message!r} (param {err.param!r})"


def through_fastroute(dialect: ModuleType, case: fs.Mutated) -> None:
    """What pipeline.dispatch and _call do with a body, short of the network."""
    body = fs.copy_json(case.body)
    try:
        if check_depth is not None:
            check_depth(body, MAX_JSON_DEPTH)
        model, stream = dialect.check_request(body)
        check_model_name(model)
        request = dialect.parse_request(body)
    except RequestError as err:
        check_refusal(err, case, "parse")
        return
    well_typed(request, ChatRequest, "request")
    for fmt, provider in PROVIDERS.items():
        try:
            fitted = fit(dataclasses.replace(request), provider, "m")
            sent = dataclasses.replace(fitted.request, model="m")
            orjson.dumps(provider.dialect.render_request(sent, stream=stream))
        except RequestError as err:
            check_refusal(err, case, f"fit/render for {fmt}")
    if dialect.NAME in FORMATS:  # the same-dialect fast path: the client's body goes on as it is
        upstream_body, _ = dialect.passthrough(fs.copy_json(case.body), "m", stream)
        assert isinstance(upstream_body, bytes) and orjson.loads(upstream_body)["model"] == "m"


@pytest.mark.parametrize("name", list(CLIENTS))
@settings(max_examples=fs.examples(40))
@given(data=st.data())
def test_valid_bodies_parse(name: str, data: st.DataObject) -> None:
    """The strategies' valid bodies are valid: parsed, well typed (else the other tests prove little)."""
    body = data.draw(fs.VALID_BODIES[name]())
    through_fastroute(CLIENTS[name], fs.Mutated(body))


@pytest.mark.parametrize("name", list(CLIENTS))
@settings(max_examples=fs.examples(150))
@given(data=st.data())
def test_client_bodies(name: str, data: st.DataObject) -> None:
    through_fastroute(CLIENTS[name], data.draw(fs.request_bodies(name)))


# ── upstream answers ────────────────────────────────────────────────────────

_RANDOM_ID = re.compile(r"^(.*?)[0-9a-f]{24}$")


def _same_id(value: str) -> str:
    """fastroute makes up ids (random) for what upstreams send without one: compared by prefix."""
    m = _RANDOM_ID.match(value)
    return m.group(1) + "<random>" if m else value


def comparable(events: list[StreamEvent]) -> list[tuple[Any, ...]]:
    out = []
    for e in events:
        call = e.tool_call
        out.append((e.kind, e.text, e.index, _same_id(e.id), e.model, e.stop_reason, e.usage,
                    (_same_id(call.id), call.name, call.arguments) if call else None,
                    (type(e.error).__name__, e.error.message) if e.error is not None else None))
    return out


def summary(events: list[StreamEvent]) -> dict[str, Any]:
    calls: dict[int, ToolCall] = {}
    out: dict[str, Any] = {"text": "", "thinking": "", "stop": None, "usage": None}
    for e in events:
        if e.kind == "text":
            out["text"] += e.text
        elif e.kind == "thinking":
            out["thinking"] += e.text
        elif e.kind == "tool_call":
            calls[e.index] = ToolCall(e.tool_call.id, e.tool_call.name, e.tool_call.arguments)
        elif e.kind == "tool_args":
            calls[e.index].arguments += e.text
        elif e.kind == "stop":
            out["stop"] = e.stop_reason
        elif e.kind == "usage":
            out["usage"] = (e.usage.input_tokens, e.usage.output_tokens)
    out["tools"] = [(c.name, orjson.loads(c.arguments)) for _, c in sorted(calls.items())]
    return out


def expected(plan: fs.Plan) -> dict[str, Any]:
    return {"text": plan.text, "thinking": plan.thinking, "stop": plan.stop,
            "usage": (plan.input_tokens, plan.output_tokens), "tools": [(n, a) for _, n, a in plan.calls]}


def check_events(events: list[StreamEvent], answer: fs.UpstreamAnswer, impl: str) -> None:
    where = f"{impl} decoder, {answer.changes or 'intact'}"
    for i, e in enumerate(events):
        if e.kind == "error":
            assert isinstance(e.error, UpstreamError), f"{where}: the error of an event is {e.error!r}"
            assert i == len(events) - 1, f"{where}: events after an error: {events[i + 1:]}"
            continue
        assert e.error is None
        well_typed(e.kind, typing.get_type_hints(StreamEvent)["kind"], f"{where}: event {i}.kind")
        well_typed(e.text, str, f"{where}: event {i} ({e.kind}).text")
        well_typed(e.index, int, f"{where}: event {i} ({e.kind}).index")
        well_typed(e.id, str, f"{where}: event {i} ({e.kind}).id")
        well_typed(e.model, str, f"{where}: event {i} ({e.kind}).model")
        well_typed(e.stop_reason, typing.get_type_hints(StreamEvent)["stop_reason"], f"{where}: event {i}.stop_reason")
        well_typed(e.usage, Usage | None, f"{where}: event {i} ({e.kind}).usage")
        well_typed(e.tool_call, ToolCall | None, f"{where}: event {i} ({e.kind}).tool_call")
        if e.kind in ("tool_call",):
            assert e.tool_call is not None, f"{where}: a tool_call event without its call"
    failed = bool(events) and events[-1].kind == "error"
    if answer.intact:
        assert not failed, f"{where}: an intact stream ended with {events[-1].error.message}"
        assert summary(events) == expected(answer.plan), where
    if answer.must_fail:
        assert failed, f"{where}: a stream that must fail ended without an error: {summary(events)}"


def decode(impl: ModuleType, fmt: str, chunks: list[bytes]) -> list[StreamEvent]:
    decoder = getattr(impl, DECODERS[fmt])("fuzz")
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.flush()


@pytest.mark.parametrize("fmt", fs.PROVIDER_FORMATS)
@settings(max_examples=fs.examples(200))
@given(data=st.data())
def test_stream_decoders(fmt: str, data: st.DataObject) -> None:
    answer = data.draw(fs.upstream_answers(fmt, stream=True, statuses=False))
    results = {}
    for name, impl in IMPLS.items():
        events = decode(impl, fmt, answer.chunks)
        check_events(events, answer, name)
        whole = decode(impl, fmt, [answer.body])
        assert comparable(whole) == comparable(events), f"{name}: one read and {len(answer.chunks)} differ"
        results[name] = comparable(events)
    if len(results) == 2:
        assert results["python"] == results["compiled"], "the Python and compiled decoders disagree"


@pytest.mark.parametrize("fmt", fs.PROVIDER_FORMATS)
@settings(max_examples=fs.examples(150))
@given(data=st.data())
def test_parse_response(fmt: str, data: st.DataObject) -> None:
    answer = data.draw(fs.upstream_answers(fmt, stream=False, statuses=False))
    try:
        response = FORMATS[fmt].parse_response(answer.body)
    except (ValueError, UpstreamError):  # orjson's decode error is a ValueError
        assert not answer.intact, "an intact answer was refused"
        return
    assert not answer.must_fail, f"an answer that must fail was read: {answer.changes}"
    well_typed(response, ChatResponse, "response")
    if answer.intact:
        thinking = "".join(p.text for p in response.content if p.type == "thinking")
        got = {"text": response.text(), "thinking": thinking, "stop": response.stop_reason,
               "usage": (response.usage.input_tokens, response.usage.output_tokens),
               "tools": [(c.name, orjson.loads(c.arguments)) for c in response.tool_calls]}
        assert got == expected(answer.plan)


@pytest.mark.parametrize("fmt", fs.PROVIDER_FORMATS)
@settings(max_examples=fs.examples(60))
@given(body=st.one_of(st.binary(max_size=64), fs.small_json.map(fs.dumps), st.sampled_from(
    [b'{"error": {"message": ["x"], "type": 5}}', b'{"error": 5}', b'{"error": null, "message": 7}',
     b'{"type": "error", "error": {"type": [], "message": {}}}', b"\xff\xfe", b"[]", b"null"])))
def test_upstream_error_message(fmt: str, body: bytes) -> None:
    """What an upstream's error body says, read for the client's message: any bytes."""
    message, kind = FORMATS[fmt].upstream_error_message(body)
    assert isinstance(message, str) and message
    assert kind is None or isinstance(kind, str)


# ── the SSE splitters ───────────────────────────────────────────────────────

sse_lines = st.sampled_from([b"data: x", b"data:y", b"data:", b"data", b"event: e", b"event:", b"id: 1", b"id: a\x00b",
                             b"id", b"retry: 10", b"retry: x", b":comment", b"", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf",
                             b"data:  two", b"\xff\xfe", b"field: v", b"data: \xe2\x98", b"\x83"])
sse_bytes = st.one_of(st.binary(max_size=200),
                      st.lists(st.tuples(sse_lines, st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b""])),
                               max_size=20).map(lambda parts: b"".join(a + b for a, b in parts)))


@settings(max_examples=fs.examples(300))
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 200), max_size=6))
def test_sse_splitters(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    seen = {}
    for name, splitter in SPLITTERS.items():
        split, whole = splitter(), splitter()
        events = [e for c in chunks for e in split.feed(c)] + split.flush()
        assert events == whole.feed(data) + whole.flush(), f"{name}: split in {len(chunks)} reads differs"
        for e in events:
            assert isinstance(e.data, bytes) and isinstance(e.event, str)
        seen[name] = events
    if len(seen) == 2:
        assert seen["python"] == seen["compiled"]
