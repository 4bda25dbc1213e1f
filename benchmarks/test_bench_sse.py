"""SSE splitting: the compiled decoder against its Python twin, on realistic streams.

    pytest benchmarks/ --benchmark-group-by=group,param:impl
"""

from __future__ import annotations

import orjson
import pytest
from support import twin

from fastroute import _speedups


def _openai_stream(n: int) -> bytes:
    out = []
    for i in range(n):
        chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": f" token{i}"}, "logprobs": None,
                              "finish_reason": None}]}
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return b"".join(out) + b"data: [DONE]\n\n"


def _anthropic_stream(n: int) -> bytes:
    out = [b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","content":[]}}\n\n']
    for i in range(n):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" token{i}"}}
        out.append(b"event: content_block_delta\ndata: " + orjson.dumps(delta) + b"\n\n")
    out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return b"".join(out)


OPENAI = _openai_stream(1000)
ANTHROPIC = _anthropic_stream(1000)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _per_event(data: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in data.split(b"\n\n") if part]


@pytest.fixture(params=["python", "compiled"], ids=["python", "compiled"])
def impl(request: pytest.FixtureRequest) -> type:
    return twin(request.param, _speedups.SSEDecoderC, _speedups.SSEDecoderPy)


def _run(cls: type, chunks: list[bytes]) -> int:
    d = cls()
    n = 0
    for c in chunks:
        n += len(d.feed(c))
    return n + len(d.flush())


CASES = {
    "sse-openai-per-event": _per_event(OPENAI),       # how upstreams usually send: one event a chunk
    "sse-openai-small-chunks": _chunks(OPENAI, 37),   # odd small reads
    "sse-openai-64k-chunks": _chunks(OPENAI, 65536),  # a fast upstream, big reads
    "sse-anthropic-per-event": _per_event(ANTHROPIC),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sse_decode(benchmark, impl: type, case: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = case
    chunks = CASES[case]
    expected = 1001 if "openai" in case else 1002
    assert benchmark(_run, impl, chunks) == expected
