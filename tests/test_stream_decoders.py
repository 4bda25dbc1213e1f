"""Each provider dialect's stream decoder, on recorded transcripts split at every byte offset,
and every decoder's events through every renderer and back."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import orjson
import pytest

from fastroute import _speedups
from fastroute.canonical import StreamEvent, ToolCall, Usage
from fastroute.formats import anthropic, ollama, openai, responses

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
