"""The SSE splitter, on both implementations: every ending, split at every offset."""

from __future__ import annotations

import pytest

from fastroute import _speedups
from fastroute._speedups import SSEEvent

OPENAI_STREAM = (
    b'data: {"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"delta":{"content":"lo \xc3\xa9t\xc3\xa9"}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_EVENTS = [
    SSEEvent("message", b'{"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}]}'),
    SSEEvent("message", b'{"id":"c1","choices":[{"delta":{"content":"Hel"}}]}'),
    SSEEvent("message", b'{"id":"c1","choices":[{"delta":{"content":"lo \xc3\xa9t\xc3\xa9"}}]}'),
    SSEEvent("message", b'{"id":"c1","choices":[],"usage":{"prompt_tokens":3}}'),
    SSEEvent("message", b"[DONE]"),
]
ANTHROPIC_STREAM = (
    b"event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
    b"event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\r\n"
    b"data: \"delta\":{\"text\":\"hi\"}}\r\n\r\n"
    b"id: 42\revent: ping\rdata: {\"type\": \"ping\"}\r\r"
    b"retry: 1500\ndata:no-space\n\n"
    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)
ANTHROPIC_EVENTS = [
    SSEEvent("message_start", b'{"type":"message_start"}'),
    SSEEvent("content_block_delta", b'{"type":"content_block_delta",\n"delta":{"text":"hi"}}'),
    SSEEvent("ping", b'{"type": "ping"}', id="42"),
    SSEEvent("message", b"no-space", id="42", retry=1500),
    SSEEvent("message_stop", b'{"type":"message_stop"}', id="42"),
]


@pytest.fixture(params=["python", "compiled"])
def decoder_class(request: pytest.FixtureRequest) -> type:
    if request.param == "python":
        return _speedups.SSEDecoderPy
    if _speedups.SSEDecoderC is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return _speedups.SSEDecoderC


def decode(cls: type, *chunks: bytes) -> list[SSEEvent]:
    d = cls()
    events = [e for chunk in chunks for e in d.feed(chunk)]
    return events + d.flush()


@pytest.mark.parametrize("stream, expected", [(OPENAI_STREAM, OPENAI_EVENTS), (ANTHROPIC_STREAM, ANTHROPIC_EVENTS)],
                         ids=["openai", "anthropic"])
def test_whole_split_everywhere_and_byte_by_byte(decoder_class: type, stream: bytes,
                                                 expected: list[SSEEvent]) -> None:
    assert decode(decoder_class, stream) == expected
    for i in range(len(stream) + 1):
        assert decode(decoder_class, stream[:i], stream[i:]) == expected, f"split at {i}"
    assert decode(decoder_class, *(stream[i:i + 1] for i in range(len(stream)))) == expected


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending(decoder_class: type, ending: bytes) -> None:
    text = b"event: e" + ending + b"data: 1" + ending + b"data: 2" + ending + ending + b"data: 3" + ending + ending
    assert decode(decoder_class, text) == [SSEEvent("e", b"1\n2"), SSEEvent("message", b"3")]


def test_cr_at_chunk_end_then_lf_is_one_ending(decoder_class: type) -> None:
    d = decoder_class()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n") == []  # the \n completes "\r\n": not a blank line
    assert d.feed(b"\r") == [SSEEvent("message", b"a")]
    assert d.feed(b"\ndata: b\n\n") == [SSEEvent("message", b"b")]


def test_events_come_out_as_soon_as_complete(decoder_class: type) -> None:
    d = decoder_class()
    assert d.feed(b"data: one\n") == []
    assert d.feed(b"\ndata: tw") == [SSEEvent("message", b"one")]
    assert d.feed(b"o\n\n") == [SSEEvent("message", b"two")]
    assert d.flush() == []


def test_comments_fields_and_unknowns(decoder_class: type) -> None:
    text = b": hello\nfoo: bar\ndata\nevent\n\nevent: x\n\ndata: after\n\n"
    # "data" with no colon: a data line with an empty value; "event" alone: the default type;
    # an event with no data line is not dispatched, and its type does not leak onward
    assert decode(decoder_class, text) == [SSEEvent("message", b""), SSEEvent("message", b"after")]


def test_value_keeps_all_but_one_leading_space(decoder_class: type) -> None:
    assert decode(decoder_class, b"data:  two spaces\n\n") == [SSEEvent("message", b" two spaces")]
    assert decode(decoder_class, b"data:a:b\n\n") == [SSEEvent("message", b"a:b")]


def test_id_persists_and_nul_is_ignored(decoder_class: type) -> None:
    text = b"id: 1\ndata: a\n\ndata: b\n\nid: bad\x00id\ndata: c\n\nid\ndata: d\n\n"
    assert decode(decoder_class, text) == [
        SSEEvent("message", b"a", id="1"), SSEEvent("message", b"b", id="1"),
        SSEEvent("message", b"c", id="1"), SSEEvent("message", b"d", id=""),
    ]


def test_retry_digits_only(decoder_class: type) -> None:
    text = b"retry: 10x\ndata: a\n\nretry: 250\ndata: b\n\nretry:\ndata: c\n\n"
    assert decode(decoder_class, text) == [SSEEvent("message", b"a"), SSEEvent("message", b"b", retry=250),
                                           SSEEvent("message", b"c")]


def test_bom_dropped_only_at_start(decoder_class: type) -> None:
    bom = b"\xef\xbb\xbf"
    assert decode(decoder_class, bom + b"data: x\n\n") == [SSEEvent("message", b"x")]
    assert decode(decoder_class, bom[:1], bom[1:2], bom[2:] + b"data: x\n\n") == [SSEEvent("message", b"x")]
    assert decode(decoder_class, b"data: x\n\n" + bom + b"data: y\n\n") == [SSEEvent("message", b"x")]


def test_flush_dispatches_unterminated_event_and_resets(decoder_class: type) -> None:
    d = decoder_class()
    assert d.feed(b"id: 9\nevent: last\ndata: tail") == []
    assert d.flush() == [SSEEvent("last", b"tail", id="9")]
    assert d.flush() == []
    assert d.feed(b"data: fresh\n\n") == [SSEEvent("message", b"fresh")]  # id does not survive a flush


def test_empty_feed_and_large_event(decoder_class: type) -> None:
    d = decoder_class()
    assert d.feed(b"") == []
    big = b"x" * 1_000_000
    assert d.feed(b"data: " + big[:300_000]) == []
    assert d.feed(big[300_000:] + b"\n\n") == [SSEEvent("message", big)]


def test_implementation_is_reported() -> None:
    assert _speedups.implementation() in ("compiled", "python")
    assert (_speedups.implementation() == "compiled") == (_speedups.SSEDecoder is _speedups.SSEDecoderC)
