"""The exact cache's parts on their own: the LRU's bounds (entries, bytes) and TTL, the key's
canonicalisation, the entry's encoding and the stream collector."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from fastroute.cache.entry import Collector, Entry, decode, encode, events_of, keepable
from fastroute.cache.key import entry_key, owner_of, request_digest
from fastroute.cache.memory import MemoryStore
from fastroute.canonical import ChatResponse, StreamEvent, TextPart, ThinkingPart, ToolCall, Usage
from fastroute.formats import anthropic, openai


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(store: MemoryStore, key: str) -> bytes | None:
    return asyncio.run(store.get(key))


# ── the LRU ───────────────────────────────────────────────────────────────

def test_lru_bound_in_entries_drops_the_least_recently_used() -> None:
    store = MemoryStore(max_entries=3, max_bytes=1 << 20, ttl_s=60)
    for k in "abc":
        store.put(k, k.encode() * 10)
    assert get(store, "a") == b"a" * 10  # a is now the most recent: b goes first
    store.put("d", b"d")
    assert len(store) == 3 and get(store, "b") is None
    assert [get(store, k) is not None for k in "acd"] == [True, True, True]
    assert store.evicted == 1


def test_lru_bound_in_bytes() -> None:
    store = MemoryStore(max_entries=100, max_bytes=100, ttl_s=60)
    store.put("a", b"x" * 39)  # 40 bytes with its key
    store.put("b", b"x" * 39)
    assert store.bytes == 80
    store.put("c", b"x" * 39)  # 120: a goes
    assert get(store, "a") is None and store.bytes == 80 and len(store) == 2
    assert not store.put("big", b"x" * 100)  # larger than the whole bound: never kept, nothing pushed out
    assert len(store) == 2 and get(store, "big") is None
    store.put("b", b"y")  # replaced: its old size is given back
    assert store.bytes == 40 + 2 and get(store, "b") == b"y"


def test_ttl() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=10, max_bytes=1000, ttl_s=5, clock=clock)
    store.put("a", b"1")
    clock.now += 4.9
    assert get(store, "a") == b"1"
    clock.now += 0.2
    assert get(store, "a") is None and store.bytes == 0 and len(store) == 0


# ── the key ───────────────────────────────────────────────────────────────

def oa(**fields: object) -> object:
    return openai.parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


def digest(request: object, dialect: object = openai) -> bytes:
    return request_digest(request, dialect.HINTS)  # type: ignore[arg-type, attr-defined]


def test_key_leaves_out_what_cannot_change_the_answer() -> None:
    base = digest(oa())
    assert digest(oa(stream=True, stream_options={"include_usage": True})) == base
    assert digest(oa(user="u1", metadata={"a": "b"}, store=True)) == base
    assert digest(oa(model="other-name")) == base  # the route's sent model stands for it
    for changed in (oa(temperature=0), oa(max_tokens=5), oa(seed=1), oa(top_p=0.5), oa(stop=["x"]),
                    oa(messages=[{"role": "user", "content": "hi!"}]), oa(logit_bias={"1": 2})):
        assert digest(changed) != base


def test_key_is_canonical_json_whatever_the_order() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}}}}}
    reordered = {"function": {"parameters": {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                                             "type": "object"}, "name": "f"}, "type": "function"}
    assert digest(oa(tools=[tool])) == digest(oa(tools=[reordered]))


def test_key_is_the_same_across_dialects_when_the_canonical_request_is() -> None:
    a = anthropic.parse_request({"model": "m", "max_tokens": 64, "system": "be brief",
                                 "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u"}})
    o = openai.parse_request({"model": "m", "max_tokens": 64, "user": "someone",
                              "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
    assert digest(a, anthropic) == digest(o, openai)


def test_key_of_the_route_and_of_the_owner() -> None:
    d = digest(oa())
    keys = {entry_key(d, "p", "m"), entry_key(d, "p", "m2"), entry_key(d, "q", "m"),
            entry_key(d, "p", "m", owner_of("sk-1")), entry_key(d, "p", "m", owner_of("sk-2"))}
    assert len(keys) == 5 and entry_key(d, "p", "m") == entry_key(d, "p", "m")
    assert "sk-1" not in owner_of("sk-1")
    headers = request_digest(oa(), openai.HINTS, {"anthropic-beta": "x"})  # type: ignore[arg-type]
    assert headers != d


# ── the entry ─────────────────────────────────────────────────────────────

ANSWER = ChatResponse(id="r1", model="m", content=[ThinkingPart("hmm", signature="sig"), TextPart("héllo")],
                      tool_calls=[ToolCall("c1", "f", '{"a":1}')], stop_reason="tool_calls",
                      usage=Usage(3, 4, reasoning_tokens=1), created=7)


def test_entry_round_trip() -> None:
    assert decode(encode(Entry(ANSWER))) == Entry(ANSWER)
    raw = b'{"id":"x","choices":[]}'
    assert decode(encode(Entry(ANSWER, raw, "openai"))) == Entry(ANSWER, raw, "openai")
    assert decode(b"\x00\x00\x00\x05nope!") is None and decode(b"") is None


def test_collector_assembles_a_stream_and_replays_it() -> None:
    c = Collector()
    for ev in events_of(ANSWER):
        c.add(ev)
    assert c.response(None) == dataclasses.replace(ANSWER, created=0)  # a stream does not say when
    cut = Collector()
    cut.add(StreamEvent("start", id="r", model="m"))
    cut.add(StreamEvent("text", text="half"))
    assert cut.response() is None  # no stop: never kept
    failed = Collector()
    for ev in events_of(ANSWER):
        failed.add(ev)
    failed.add(StreamEvent("error", error=None))
    assert failed.response() is None


@pytest.mark.parametrize("stop, kept", [("stop", True), ("length", True), ("pause", False), ("error", False)])
def test_only_finished_answers_are_kept(stop: str, kept: bool) -> None:
    assert keepable(ChatResponse(id="r", model="m", content=[TextPart("x")], stop_reason=stop)) is kept  # type: ignore[arg-type]
