"""The SSE splitter, on both implementations: every ending, split at every offset."""

from __future__ import annotations

import importlib
import random

import pytest

from fastroute import _speedups
from fastroute._speedups import SSEEvent, _sse_py
from fastroute.config import ServerConfig
from fastroute.limits import MAX_STREAM_LINE_BYTES, StreamLineTooLong

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


# ── the bound: a line or an event over max_line_bytes ends the stream ──────

LIMIT = 64


def feed_all(d: object, chunks: list[bytes]) -> list[object]:
    """Everything a decoder or splitter gives for ``chunks``, flush included; the error it raises
    ends the list (as it ends the stream)."""
    out: list[object] = []
    try:
        for chunk in chunks:
            out += d.feed(chunk)  # type: ignore[attr-defined]
        out += d.flush()  # type: ignore[attr-defined]
    except StreamLineTooLong as exc:
        out.append(("too long", str(exc)))
    return out


def splits(data: bytes) -> list[list[bytes]]:
    """``data`` whole, cut in two at every offset, and byte by byte."""
    return [[data], *([data[:i], data[i:]] for i in range(1, len(data))), [data[i:i + 1] for i in range(len(data))]]


def test_default_bound_is_the_configs(decoder_class: type) -> None:
    assert decoder_class().max_line_bytes == MAX_STREAM_LINE_BYTES == ServerConfig().max_stream_line_bytes


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_at_the_bound_passes_one_over_ends_the_stream(decoder_class: type, ending: bytes) -> None:
    at = b"data: " + b"x" * (LIMIT - 6)  # LIMIT bytes, the ending not counted
    for chunks in splits(at + ending + ending):
        assert feed_all(decoder_class(LIMIT), chunks) == [SSEEvent("message", b"x" * (LIMIT - 6))]
    over = b"data: ok" + ending + ending + at + b"y" + ending + ending
    for chunks in splits(over):
        out = feed_all(decoder_class(LIMIT), chunks)
        assert out[-1] == ("too long", f"the stream sent a line of over {LIMIT} bytes without ending it "
                                       "([server] max_stream_line_bytes)"), chunks
        assert all(e == SSEEvent("message", b"ok") for e in out[:-1])  # nothing of the long line came out


@pytest.mark.parametrize("limit, piece", [(LIMIT, 1), (100_000, 1000)], ids=["short", "long-in-pieces"])
def test_unfinished_line_ends_the_stream_once_over_the_bound(decoder_class: type, limit: int, piece: int) -> None:
    """An upstream that never ends its line is cut off when the line passes the bound, not buffered."""
    d = decoder_class(limit)
    assert d.feed(b"data: ") == []
    for _ in range((limit - 6) // piece):
        assert d.feed(b"x" * piece) == []
    assert d.feed(b"x" * ((limit - 6) % piece)) == []  # exactly at the bound
    with pytest.raises(StreamLineTooLong):
        d.feed(b"x")


def test_long_line_in_many_pieces_comes_out_whole(decoder_class: type) -> None:
    big = bytes(range(32, 127)) * 2000  # 190,000 bytes, no line ending in it
    pieces = [big[i:i + 997] for i in range(0, len(big), 997)]
    for ending in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        d = decoder_class(len(big) + 6)
        events = [e for p in [b"data: ", *pieces, ending, b"data: next" + ending] for e in d.feed(p)]
        assert events == [SSEEvent("message", big), SSEEvent("message", b"next")]


def test_event_whose_data_lines_add_up_over_the_bound(decoder_class: type) -> None:
    line = b"data: " + b"z" * 20 + b"\n"  # 20 bytes of data a line, each line well under the bound
    fits = line * 3 + b"\n"  # 3 * 20 + 2 joins = 62 bytes of data
    assert feed_all(decoder_class(LIMIT), [fits]) == [SSEEvent("message", b"\n".join([b"z" * 20] * 3))]
    for chunks in splits(line * 4 + b"\n"):  # 83 bytes: over
        assert feed_all(decoder_class(LIMIT), chunks) == [
            ("too long", f"the stream sent an event of over {LIMIT} bytes without ending it "
                         "([server] max_stream_line_bytes)")]
    # comments, and events of many short lines that each end, never add up
    many = (b": keep-alive\n" * 50 + b"data: a\n\n") * 20
    assert feed_all(decoder_class(LIMIT), [many]) == [SSEEvent("message", b"a")] * 20


def _random_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        n = rng.choice([0, 1, 5, LIMIT - 7, LIMIT - 6, LIMIT - 5, LIMIT, 2 * LIMIT])
        ending = rng.choice([b"\n", b"\r\n", b"\r"])
        if kind < 0.6:
            parts.append(b"data: " + b"d" * n + ending)
        elif kind < 0.7:
            parts.append(b"event: e" + ending)
        elif kind < 0.8:
            parts.append(b": " + b"c" * n + ending)
        else:
            parts.append(ending)
    return rng.choice([b"", b"\xef\xbb\xbf"]) + b"".join(parts)


def test_both_implementations_agree_bound_included() -> None:
    if _speedups.SSEDecoderC is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    rng = random.Random(20261202)
    for _ in range(3000):
        stream = _random_stream(rng)
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 6))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert feed_all(_speedups.SSEDecoderPy(LIMIT), chunks) == feed_all(_speedups.SSEDecoderC(LIMIT), chunks), \
            chunks


# ── NDJSON (Ollama), the same bound ────────────────────────────────────────

@pytest.fixture(params=["python", "compiled"])
def splitter_class(request: pytest.FixtureRequest) -> type:
    if request.param == "python":
        return _sse_py.NDJSONSplitter
    if _speedups.SSEDecoderC is None:
        pytest.skip("compiled speedups not built or FASTROUTE_NO_EXTENSIONS set")
    return importlib.import_module("fastroute._speedups._sse_c").NDJSONSplitter


def test_ndjson_lines_split_everywhere(splitter_class: type) -> None:
    stream = b'{"a":1}\n{"b":"\xc3\xa9"}\r\n\n{"c":3}'
    for chunks in splits(stream):
        assert feed_all(splitter_class(), chunks) == [b'{"a":1}', b'{"b":"\xc3\xa9"}\r', b"", b'{"c":3}']
    assert splitter_class().max_line_bytes == MAX_STREAM_LINE_BYTES


def test_ndjson_bound(splitter_class: type) -> None:
    at = b"[" + b"1" * (LIMIT - 2) + b"]"
    for chunks in splits(at + b"\n" + at):
        assert feed_all(splitter_class(LIMIT), chunks) == [at, at]
    for chunks in splits(b"{}\n" + at + b"x\n{}\n"):
        out = feed_all(splitter_class(LIMIT), chunks)
        assert out[-1] == ("too long", f"the stream sent a line of over {LIMIT} bytes without ending it "
                                       "([server] max_stream_line_bytes)")
        assert out[:-1] in ([], [b"{}"])
    for limit, piece in ((LIMIT, 1), (100_000, 1000)):
        s = splitter_class(limit)
        for _ in range(limit // piece):
            assert s.feed(b"x" * piece) == []
        with pytest.raises(StreamLineTooLong):
            s.feed(b"x")
    big = b"q" * 100_000
    s = splitter_class(len(big))
    assert [x for i in range(0, len(big), 333) for x in s.feed(big[i:i + 333])] + s.feed(b"\n") == [big]
