"""Each provider dialect's stream decoder, on recorded transcripts split at every byte offset,
and every decoder's events through every renderer and back; odd streams (an odd event in a read
of good ones, garbage, a cut, tool calls without an id or arguments), both implementations."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from fastroute import _speedups
from fastroute.canonical import StreamEvent, ToolCall, Usage
from fastroute.errors import UpstreamProtocolError
from fastroute.formats import anthropic, ollama, openai, responses
from fastroute.formats.framing import ndjson_boundary, sse_boundary

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {
    "openai": (openai, "openai_tools_stream.sse"),
    "anthropic": (anthropic, "anthropic_thinking_tools_stream.sse"),
    "ollama": (ollama, "ollama_thinking_tools_stream.ndjson"),
}
SIGNATURE = "EqQBCkgIBxABGAIqQKq5+/Zb0x3f9w==\u2603"


DECODERS = {openai: "OpenAIStreamDecoder", anthropic: "AnthropicStreamDecoder", ollama: "OllamaStreamDecoder"}


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "python":
        return _speedups.decode_py
    if _speedups.decode_c is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return _speedups.decode_c


def decode(dialect: ModuleType, *chunks: bytes, impl: ModuleType | None = None) -> list[StreamEvent]:
    decoder = getattr(impl, DECODERS[dialect])("test") if impl is not None else dialect.StreamDecoder("test")
    events = [e for c in chunks for e in decoder.feed(c)]
    events += decoder.flush()
    for e in events:
        if e.kind == "start" and dialect is ollama:
            e.id = ""  # Ollama streams carry no id: fastroute makes one up, different each time
        if e.kind == "tool_call" and dialect is ollama:
            e.tool_call.id = ""  # nor do its tool calls (tests/test_ollama_ids.py checks the made-up ones)
    return events


def summary(events: list[StreamEvent]) -> dict:
    calls: dict[int, ToolCall] = {}
    out: dict = {"text": "", "thinking": "", "signature": "", "stop": None, "usage": None}
    for e in events:
        if e.kind == "text":
            out["text"] += e.text
        elif e.kind == "thinking":
            out["thinking"] += e.text
        elif e.kind == "signature":
            out["signature"] += e.text
        elif e.kind == "tool_call":
            calls[e.index] = ToolCall(e.tool_call.id, e.tool_call.name, e.tool_call.arguments)
        elif e.kind == "tool_args":
            calls[e.index].arguments += e.text
        elif e.kind == "stop":
            out["stop"] = e.stop_reason
        elif e.kind == "usage":
            out["usage"] = e.usage
        assert e.kind != "error", e.error
    out["tools"] = [(c.name, orjson.loads(c.arguments)) for _, c in sorted(calls.items())]
    return out


EXPECTED = {
    "openai": {"text": "Let me check the weather in Paris — and Lyon ☀️.", "thinking": "", "signature": "",
               "stop": "tool_calls", "tools": [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})],
               "usage": Usage(input_tokens=82, output_tokens=41, cached_input_tokens=64)},
    "anthropic": {"text": "Checking Paris — one moment ☀️.", "thinking": "The user wants weather; call the tool.",
                  "signature": SIGNATURE, "stop": "tool_calls", "tools": [("get_weather", {"city": "Paris"})],
                  "usage": Usage(input_tokens=1436, output_tokens=87, cached_input_tokens=1024)},
    "ollama": {"text": "Checking Paris — one moment ☀️.", "thinking": "Need the weather tool.", "signature": "",
               "stop": "tool_calls", "tools": [("get_weather", {"city": "Paris"})],
               "usage": Usage(input_tokens=57, output_tokens=33)},
}


@pytest.mark.parametrize("name", list(CASES))
def test_transcript_decodes_to_what_it_says(name: str, impl: ModuleType) -> None:
    dialect, fixture = CASES[name]
    data = (FIXTURES / fixture).read_bytes()
    assert summary(decode(dialect, data, impl=impl)) == EXPECTED[name]


@pytest.mark.parametrize("name", list(CASES))
def test_transcript_split_at_every_offset(name: str, impl: ModuleType) -> None:
    dialect, fixture = CASES[name]
    data = (FIXTURES / fixture).read_bytes()
    whole = decode(dialect, data, impl=impl)
    for i in range(1, len(data)):
        assert decode(dialect, data[:i], data[i:], impl=impl) == whole, f"split at byte {i}"
    assert decode(dialect, *(data[i:i + 1] for i in range(len(data))), impl=impl) == whole
    for size in (7, 61, 1024):
        assert decode(dialect, *(data[i:i + size] for i in range(0, len(data), size)), impl=impl) == whole


def test_live_decoders_are_the_ones_reported() -> None:
    live = _speedups.decode_c if _speedups.implementation() == "compiled" else _speedups.decode_py
    assert openai.StreamDecoder is live.OpenAIStreamDecoder
    assert anthropic.StreamDecoder is live.AnthropicStreamDecoder


RENDERERS = {"openai": openai, "anthropic": anthropic, "ollama": ollama}


@pytest.mark.parametrize("source", list(CASES))
@pytest.mark.parametrize("target", list(RENDERERS))
def test_every_decoder_through_every_renderer(source: str, target: str) -> None:
    """What one dialect streamed, rendered for a client of another and read back, says the same."""
    dialect, fixture = CASES[source]
    events = decode(dialect, (FIXTURES / fixture).read_bytes())
    renderer = RENDERERS[target].StreamRenderer()
    wire = b"".join(renderer.render(e) for e in events) + renderer.end()
    back = summary(decode(RENDERERS[target], wire))
    expected = EXPECTED[source]
    assert back["text"] == expected["text"]
    assert back["tools"] == expected["tools"]
    assert back["stop"] == "tool_calls"
    assert back["usage"].output_tokens == expected["usage"].output_tokens
    if target != "openai":  # OpenAI's chunks carry reasoning text but no signature
        assert back["thinking"] == expected["thinking"]
    if target == "anthropic":
        assert back["signature"] == expected["signature"]
        indexes = [orjson.loads(line[6:])["index"] for line in wire.split(b"\n")
                   if line.startswith(b"data: ") and b'"content_block_start"' in line]
        assert indexes == list(range(len(indexes)))  # 0, 1, 2 ... no gaps
    if target == "ollama":
        assert all(line for line in wire.split(b"\n")[:-1])  # strict NDJSON


@pytest.mark.parametrize("source", list(CASES))
def test_responses_renderer_carries_everything(source: str) -> None:
    dialect, fixture = CASES[source]
    renderer = responses.StreamRenderer()
    wire = b"".join(renderer.render(e) for e in decode(dialect, (FIXTURES / fixture).read_bytes())) + renderer.end()
    events = [orjson.loads(line[6:]) for line in wire.split(b"\n") if line.startswith(b"data: ")]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    output = events[-1]["response"]["output"]
    text = "".join(c["text"] for item in output if item["type"] == "message" for c in item["content"])
    calls = [(i["name"], orjson.loads(i["arguments"])) for i in output if i["type"] == "function_call"]
    assert text == EXPECTED[source]["text"] and calls == EXPECTED[source]["tools"]
    assert events[-1]["response"]["usage"]["output_tokens"] == EXPECTED[source]["usage"].output_tokens


# ── odd streams: every decoder, both implementations ───────────────────────

CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def _raw(impl: ModuleType, name: str, *chunks: bytes, flush: bool = True) -> list[StreamEvent]:
    decoder = getattr(impl, DECODERS[CASES[name][0]])("test")
    events = [e for c in chunks for e in decoder.feed(c)]
    return events + decoder.flush() if flush else events


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({"id": "c1", "model": "m", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


def _anthropic(kind: str, **payload: object) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def _ollama(message: object, done: bool = False) -> bytes:
    return orjson.dumps({"model": "m", "message": message, "done": done}) + b"\n"


def test_openai_tool_calls_without_an_id_get_distinct_random_ones(impl: ModuleType) -> None:
    """Not ``call_<index>``: that repeats in every answer, and a client pairs results by id."""
    stream = (_chunk({"tool_calls": [{"index": 0, "function": {"name": "a", "arguments": "{}"}},
                                     {"index": 1, "function": {"name": "b", "arguments": "{}"}}]})
              + _chunk({"tool_calls": [{"index": 2, "id": "call_given", "function": {"name": "c"}}]})
              + _chunk({}, "tool_calls") + b"data: [DONE]\n\n")
    ids = []
    for _ in range(50):
        calls = [e.tool_call for e in _raw(impl, "openai", stream) if e.kind == "tool_call"]
        assert calls[2].id == "call_given"  # an id the upstream sent is kept
        ids += [c.id for c in calls[:2]]
    assert all(CALL_ID.fullmatch(i) for i in ids) and len(set(ids)) == 100


ODD = {  # per format: good events, one odd event, more good events; the path the error names
    "openai": (_chunk({"role": "assistant", "content": "fine "}) + _chunk({"content": "so far"}),
               b'data: {"id":"c1","choices":[null]}\n\n', _chunk({"content": "never"}) + _chunk({}, "stop"),
               "choices[0]: expected an object, got null"),
    "anthropic": (_anthropic("message_start", message={"id": "msg_1", "model": "m", "usage": {"input_tokens": 1}})
                  + _anthropic("content_block_start", index=0, content_block={"type": "text", "text": ""})
                  + _anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": "fine so far"}),
                  _anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": 5}),
                  _anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": "never"})
                  + _anthropic("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1})
                  + _anthropic("message_stop"),
                  "delta.text: expected a string, got an integer"),
    "ollama": (_ollama({"role": "assistant", "content": "fine "}) + _ollama({"role": "assistant", "content": "so far"}),
               _ollama({"role": "assistant", "tool_calls": [None]}),
               _ollama({"role": "assistant", "content": "never"}) + _ollama({"role": "assistant", "content": ""}, True),
               "message.tool_calls[0]: expected an object, got null"),
}


@pytest.mark.parametrize("name", list(ODD))
def test_an_odd_event_ends_the_stream_after_the_good_events_of_its_read(name: str, impl: ModuleType) -> None:
    good, odd, after, path = ODD[name]
    events = _raw(impl, name, good + odd + after)  # one read holding all of it
    texts = [e.text for e in events if e.kind == "text"]
    assert "".join(texts) == "fine so far"  # what came before the odd event, in the same read
    assert [e.kind for e in events].count("error") == 1 and events[-1].kind == "error"  # nothing after it
    message = events[-1].error.message
    assert isinstance(events[-1].error, UpstreamProtocolError)
    assert message == f"provider 'test' sent a stream event fastroute cannot read: {path}", message
    whole = [(e.kind, e.text) for e in events if e.kind != "start"]
    data = good + odd + after
    for i in range(1, len(data)):  # the same, wherever the reads are split
        split = [(e.kind, e.text) for e in _raw(impl, name, data[:i], data[i:]) if e.kind != "start"]
        assert split[:-1] == whole[:-1] and split[-1][0] == "error", f"split at byte {i}"


GARBAGE = {"openai": b"data: not json\n\n", "anthropic": b"data: {\"type\": \"content_block_delta\"\n\n",
           "ollama": b"<html>502 Bad Gateway</html>\n"}


@pytest.mark.parametrize("name", list(CASES))
def test_garbage_between_events_is_an_error_and_keepalives_are_not(name: str, impl: ModuleType) -> None:
    data = (FIXTURES / CASES[name][1]).read_bytes()
    cut = re.search(rb"\n" if name == "ollama" else rb"\r\n\r\n|\n\n", data).end()  # after the first event
    events = _raw(impl, name, data[:cut] + GARBAGE[name] + data[cut:])
    assert events[-1].kind == "error" and [e.kind for e in events].count("error") == 1
    assert "cannot read" in events[-1].error.message or "not JSON" in events[-1].error.message
    ignored = b"\n  \n" if name == "ollama" else b": keep-alive\n\ndata:\n\nevent: ping\n\nretry: 5\n\n"
    padded = _raw(impl, name, data[:cut] + ignored + data[cut:])
    assert summary(padded) == summary(_raw(impl, name, data)) == EXPECTED[name]  # what framing ignores changes nothing


TERMINAL = {"openai": b'"finish_reason":"tool_calls"', "anthropic": b"event: message_delta",
            "ollama": b'"done":true'}


@pytest.mark.parametrize("name", list(CASES))
def test_a_stream_cut_before_its_end_ends_with_an_error(name: str, impl: ModuleType) -> None:
    """At any byte before its finish: a cut answer never looks whole (the upstream closed cleanly)."""
    data = (FIXTURES / CASES[name][1]).read_bytes()
    end = (ndjson_boundary if name == "ollama" else sse_boundary)(data[:data.index(TERMINAL[name])])
    assert end > len(data) // 2  # the finish is near the end: most of the transcript is tried
    for k in range(end + 1):
        events = _raw(impl, name, data[:k])
        assert events and events[-1].kind == "error", f"cut at byte {k}: {events[-1:] }"
        assert [e.kind for e in events].count("error") == 1
        assert isinstance(events[-1].error, UpstreamProtocolError)
    assert all(e.kind != "error" for e in _raw(impl, name, data))
    assert _raw(impl, name, b"")[-1].error.message == \
        "provider 'test' ended the stream before its answer was complete"


def test_a_tool_called_without_arguments_has_json_arguments(impl: ModuleType) -> None:
    """Anthropic streams a call of a tool without parameters as ``input: {}`` and one empty
    delta; a client of another dialect must still get JSON arguments (``{}``), not ``""``."""
    stream = (_anthropic("message_start", message={"id": "msg_1", "model": "m"})
              + _anthropic("content_block_start", index=0, content_block={"type": "tool_use", "id": "toolu_1",
                                                                          "name": "now", "input": {}})
              + _anthropic("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": ""})
              + _anthropic("content_block_stop", index=0)
              + _anthropic("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 3})
              + _anthropic("message_stop"))
    assert summary(decode(anthropic, stream, impl=impl))["tools"] == [("now", {})]
    openai_stream = (_chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "now", "arguments": ""}}]})
                     + _chunk({}, "tool_calls") + b"data: [DONE]\n\n")
    assert summary(decode(openai, openai_stream, impl=impl))["tools"] == [("now", {})]


def test_token_counts_are_whole_numbers_in_range(impl: ModuleType) -> None:
    def usage(u: dict) -> list[StreamEvent]:
        return _raw(impl, "openai", b"data: " + orjson.dumps({"choices": [], "usage": u}) + b"\n\ndata: [DONE]\n\n")

    got = [e.usage for e in usage({"prompt_tokens": 3.0, "completion_tokens": 2}) if e.kind == "usage"]
    assert got == [Usage(input_tokens=3, output_tokens=2)] and type(got[0].input_tokens) is int
    for odd, why in (({"prompt_tokens": "3"}, "usage.prompt_tokens: expected a number, got a string"),
                     ({"prompt_tokens": -1}, "a token count of -1 is out of range"),
                     ({"completion_tokens": 1e300}, "a token count of 1e+300 is out of range")):
        events = usage(odd)
        assert events[-1].kind == "error" and events[-1].error.message.endswith(why), events[-1]
