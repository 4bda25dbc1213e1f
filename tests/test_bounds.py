"""Every table that grows with what clients send, or with time, has a bound: one test each.

The bounds of the metric labels are in tests/test_metrics_bounds.py, the memory store's in
tests/test_storage.py, the stream splitters' in tests/test_sse.py; the soak benchmark
(benchmarks/soak.py) shows the whole server flat under 100,000 mixed requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import types
from pathlib import Path

import httpx
import orjson
import pytest

from fastroute.config import FailoverConfig, config_from_dict
from fastroute.providers import build_providers
from fastroute.recording.console import ConsoleLog, REASON_LIMIT
from fastroute.recording.events import EventBus
from fastroute.recording.log import MIN_PENDING, RequestLog, pending_bound
from fastroute.recording.recorder import EVENT_TEXT_LIMIT, EVENT_TOOL_CALLS, Recorder
from fastroute.routing import discovery
from fastroute.routing.health import Health
from fastroute.tokens import TokenCounter


# ── the event feed ─────────────────────────────────────────────────────────

def test_a_viewer_too_many_bytes_behind_is_dropped() -> None:
    async def scenario() -> None:
        bus = EventBus(queue_size=1000, queue_bytes=10_000)
        slow, _ = bus.subscribe()
        reader, _ = bus.subscribe()
        for _ in range(9):
            bus.deliver(b"x" * 1000)
            assert await reader.get()  # keeps up
        assert not slow.dropped and slow.bytes == 9000
        bus.deliver(b"y" * 1001)  # 10,001 bytes waiting: too many, though far from 1000 events
        assert slow.dropped and not reader.dropped and bus.subscribers == 1
        assert await reader.get() == b"y" * 1001 and reader.bytes == 0

    asyncio.run(scenario())


def test_viewers_beyond_the_bound_get_the_history_and_the_end(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        bus = EventBus(max_subscribers=2)
        bus.publish({"type": "start", "id": "r1"})
        first, _ = bus.subscribe()
        second, _ = bus.subscribe()
        extra, history = bus.subscribe()
        assert [orjson.loads(h)["id"] for h in history] == ["r1"]  # what every new viewer sees first
        assert extra.dropped and await extra.get() == b"" and bus.subscribers == 2
        bus.publish({"type": "start", "id": "r2"})
        assert orjson.loads(await first.get())["id"] == "r2"
        first.close()
        again, _ = bus.subscribe()  # room again
        assert not again.dropped and bus.subscribers == 2

    caplog.set_level(logging.WARNING, logger="fastroute.events")
    asyncio.run(scenario())
    assert "2 event viewers already" in caplog.text


def test_history_holds_clipped_events_whatever_a_request_carried() -> None:
    """The feed's history keeps 500 events: each must be small, however big the exchange."""
    bus = EventBus(history=500)
    recorder = Recorder(bus)
    huge = "w" * 1_000_000
    calls = [types.SimpleNamespace(id=f"c{i}", name="Write", arguments=huge) for i in range(100)]
    message = types.SimpleNamespace(role="assistant", content=[], tool_calls=calls)
    request = types.SimpleNamespace(system=huge, messages=[message] * 10)
    ex = types.SimpleNamespace(
        id="r", ts_ms=0, dialect="openai", stream=False, provider="p", requested_model="m", sent_model="m",
        rule=0, status=502, duration_ms=1.0, ttft_ms=None, tags=[], response_tags=[], plugins=[], request=request,
        response_text=huge, error=huge, usage=None, attempts=[], omitted_tools=[], key_name=None, session=None, cost_micros=None,
        limited_by=None, cache=None)
    for _ in range(600):
        recorder.complete(ex, 0)
    history = bus.recent()  # encoded now: nobody was watching
    assert len(history) == 500
    event = orjson.loads(history[-1])
    assert len(event["messages"]) == 3 and len(event["messages"][0]["tool_calls"]) == EVENT_TOOL_CALLS
    assert event["messages"][0]["tool_calls"][0]["arguments"].startswith("w" * EVENT_TEXT_LIMIT + "…")
    assert event["error"].endswith("(1000000 characters)") and event["response"].endswith("(1000000 characters)")
    assert sum(map(len, history)) < 500 * 150_000  # not 500 * 100 MB


# ── the request log ────────────────────────────────────────────────────────

def test_request_log_drops_entries_while_the_disk_is_stalled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A FIFO nobody reads stalls the writer like a hung disk: the queue stops at its bound."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    caplog.set_level(logging.WARNING, logger="fastroute.log")
    log = RequestLog(fifo, max_pending=100)  # the writer thread waits in open() for a reader
    for i in range(1000):
        log.write({"i": i})
    assert log.dropped == 900 and "dropping new ones" in caplog.text
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(open(fifo, "rb").read().splitlines()))
    reader.start()  # the disk is back
    log.close()
    reader.join(30)
    assert [orjson.loads(line)["i"] for line in lines] == list(range(100))


def test_request_log_bound_follows_the_size_of_entries() -> None:
    assert pending_bound(10_000, 64 << 20, 1_000) == 10_000  # small entries: the count is the bound
    assert pending_bound(10_000, 64 << 20, 80_000) == (64 << 20) // 80_000  # agent-sized: the bytes are
    assert pending_bound(10_000, 64 << 20, 50 << 20) == MIN_PENDING  # never fewer than this
    assert pending_bound(10_000, 64 << 20, 0) == 10_000  # nothing measured yet


def test_request_log_lowers_its_bound_once_it_has_seen_big_entries(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "log.jsonl", max_pending=10_000, max_pending_bytes=100_000_000)
    log.write({"text": "x" * 100_000})
    log.close()
    assert log.bound == 100_000_000 // (100_000 + len('{"text":""}\n')) == 999


# ── the console ────────────────────────────────────────────────────────────

def test_console_queue_keeps_only_what_a_line_shows() -> None:
    console = ConsoleLog(out=open(os.devnull, "w"))
    entry = {"error": "e" * 1_000_000, "status": 502, "ts_ms": 0, "dialect": "openai", "requested_model": "m",
             "provider": "p", "sent_model": "m", "duration_ms": 1.0, "id": "r"}
    console.note(entry)
    console.note_miss(404, "openai", "GET", "/" + "p" * 1_000_000, "r" * 1_000_000)
    kept = list(console._pending)
    assert all(len(record[8]) <= 4 * REASON_LIMIT for record in kept)
    assert len(kept[1][3]) <= 4 * REASON_LIMIT + len("GET ")
    assert console._pending.maxlen is not None


# ── circuit breakers ───────────────────────────────────────────────────────

def test_breakers_table_is_bounded_and_keeps_open_breakers() -> None:
    now = [0.0]
    health = Health(FailoverConfig(breaker_threshold=1), clock=lambda: now[0], max_breakers=10)
    for i in range(5):
        now[0] = float(i)
        health.failure(f"down{i}")  # open
    for i in range(1000):
        health.success(f"made-up-{i}")
        assert len(health._breakers) <= 10
    assert all(health.state(f"down{i}") == "open" for i in range(5))
    for i in range(20):  # only open breakers: the one opened longest ago makes room
        now[0] = 100.0 + i
        health.failure(f"more{i}")
    assert len(health._breakers) <= 10 and health.state("more19") == "open"


# ── discovery ──────────────────────────────────────────────────────────────

def test_a_huge_model_list_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config_from_dict({"providers": [{"name": "big", "format": "openai", "base_url": "http://big/v1"}]})
    provider = build_providers(cfg, None)["big"]
    n = discovery.MAX_MODELS + 1000

    def models(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": f"m{i}"} for i in range(n)]})

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(models)) as client:
            await discovery.discover_one(client, provider, 3.0)
            await discovery.discover_one(client, provider, 3.0)  # said once, not every refresh

    caplog.set_level(logging.WARNING, logger="fastroute.discovery")
    asyncio.run(scenario())
    assert len(provider.discovered) == discovery.MAX_MODELS and "m0" in provider.discovered
    assert caplog.text.count(f"lists {n} models; keeping the first {discovery.MAX_MODELS}") == 1


# ── the tokenizer's cache ──────────────────────────────────────────────────

def test_tokenizers_loaded_are_the_few_encodings_whatever_the_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fake_bpe")
    fake.get_encoding = lambda name: types.SimpleNamespace(encode_ordinary=lambda text: text.split())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_bpe", fake)
    counter = TokenCounter(library="fake_bpe")
    for i in range(2000):
        counter.count_text("a b c", encoding=counter_encoding(f"model-{i}"))
        counter.prepare(f"gpt-4o-{i}")
        counter.prepare(f"claude-{i}")
    assert set(counter._encodings) <= {"o200k_base", "cl100k_base"}


def counter_encoding(model: str) -> str:
    from fastroute.tokens import encoding_for_model

    return encoding_for_model(model)[0]


def test_events_nobody_watched_are_encoded_for_the_viewer_who_comes() -> None:
    """Published with no subscriber, an event waits unencoded; a new viewer gets it as JSON, in order,
    and from then on events reach it encoded at once."""
    bus = EventBus(history=3)

    async def scenario() -> None:
        for i in range(5):
            bus.publish({"type": "start", "id": f"r{i}"})
        assert all(isinstance(e, dict) for e in bus.history)
        sub, history = bus.subscribe()
        assert [orjson.loads(e)["id"] for e in history] == ["r2", "r3", "r4"]
        bus.publish({"type": "start", "id": "r5"})
        assert orjson.loads(await sub.get())["id"] == "r5" and isinstance(bus.history[-1], bytes)
        sub.close()

    asyncio.run(scenario())
