"""Per-chunk stream costs: decoding each provider dialect (compiled vs Python), a full
translation (decode + render), and, for comparison, the same-dialect passthrough tap.

    pytest benchmarks/ --benchmark-group-by=group,param:impl
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from support import twin

from fastroute import _speedups
from fastroute.formats import anthropic, ollama, openai

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _per_event(data: bytes, sep: bytes) -> list[bytes]:
    """One chunk per event, as upstreams send them."""
    return [part + sep for part in data.split(sep) if part.strip()]


def _load(name: str, sep: bytes, body_events: int = 200) -> list[bytes]:
    """A long stream: the transcript's middle repeated, so most chunks are content deltas."""
    events = _per_event((FIXTURES / name).read_bytes(), sep)
    head, middle, tail = events[:1], events[1:-1], events[-1:]
    return head + (middle * (body_events // max(1, len(middle)) + 1))[:body_events] + tail


STREAMS = {
    "openai": (_load("openai_tools_stream.sse", b"\n\n"), "OpenAIStreamDecoder"),
    "anthropic": (_load("anthropic_thinking_tools_stream.sse", b"\r\n\r\n"), "AnthropicStreamDecoder"),
    "ollama": (_load("ollama_thinking_tools_stream.ndjson", b"\n"), "OllamaStreamDecoder"),
}


@pytest.fixture(params=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request.param, _speedups.decode_c, _speedups.decode_py)


def _decode(cls: type, chunks: list[bytes]) -> int:
    d = cls("bench")
    n = 0
    for c in chunks:
        n += len(d.feed(c))
    return n + len(d.flush())


@pytest.mark.parametrize("dialect", list(STREAMS))
def test_decode(benchmark, impl: ModuleType, dialect: str) -> None:  # type: ignore[no-untyped-def]
    chunks, name = STREAMS[dialect]
    benchmark.group = f"decode-{dialect} ({len(chunks)} chunks)"
    assert benchmark(_decode, getattr(impl, name), chunks) > len(chunks) // 2


def _translate(cls: type, renderer_module: ModuleType, chunks: list[bytes]) -> int:
    d = cls("bench")
    r = renderer_module.StreamRenderer()
    size = 0
    for c in chunks:
        for ev in d.feed(c):
            size += len(r.render(ev))
    return size + len(r.end())


@pytest.mark.parametrize("pair", ["anthropic->openai", "openai->anthropic", "ollama->openai", "openai->ollama"])
def test_translate(benchmark, impl: ModuleType, pair: str) -> None:  # type: ignore[no-untyped-def]
    source, target = pair.split("->")
    chunks, name = STREAMS[source]
    benchmark.group = f"translate-{pair} ({len(chunks)} chunks)"
    renderer = {"openai": openai, "anthropic": anthropic, "ollama": ollama}[target]
    assert benchmark(_translate, getattr(impl, name), renderer, chunks) > 0


def _forward(chunks: list[bytes]) -> int:
    tap = openai.StreamTap(hide_usage=True)
    return sum(len(tap.forward(c)) for c in chunks)


def _account(chunks: list[bytes]) -> int:
    tap = openai.StreamTap(hide_usage=True)
    for c in chunks:
        tap.feed(c)
    return len(tap.text_parts)


def test_passthrough_forward(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Same dialect in and out: all fastroute does to a chunk before the client has it."""
    chunks, _ = STREAMS["openai"]
    benchmark.group = f"passthrough-openai ({len(chunks)} chunks)"
    forwarded = benchmark(_forward, chunks)
    assert 0 < forwarded < sum(len(c) for c in chunks)  # all but the usage-only event fastroute asked for


def test_passthrough_accounting(benchmark) -> None:  # type: ignore[no-untyped-def]
    """...and what it reads on the side afterwards (text and usage for the log)."""
    chunks, _ = STREAMS["openai"]
    benchmark.group = f"passthrough-openai ({len(chunks)} chunks)"
    assert benchmark(_account, chunks) > 0
