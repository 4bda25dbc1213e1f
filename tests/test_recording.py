"""Events, the request log and metrics, as a user of a running fastroute sees them."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import openai
import pytest

from fastroute.recording.events import EventBus
from tests.conftest import PROVIDER_KEY, FastrouteProcess, free_port
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hello big world"}]


def config(stub: StubUpstream, log_path: Path) -> str:
    return f"""
[server]
dashboard = true

[logging]
enabled = true
path = "{log_path}"

[classifiers.keyword]
enabled = true
[classifiers.keyword.tags]
greeting = ["hello"]

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
cost_per_1m_tokens = 2.0

[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "dead"
format = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
connect_timeout = 1

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "failover"
provider = "dead"
fallbacks = ["stub"]

[[routers]]
type = "prefix"
model_prefix = ""
provider = "stub"
"""


class Feed:
    """Collects /dashboard/events in a thread."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.events: list[dict] = []
        self.ready = threading.Event()
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self.ready.wait(10)

    def _run(self, url: str) -> None:
        with httpx.stream("GET", f"{url}/dashboard/events", timeout=None, headers=self._headers) as resp:
            self.ready.set()
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))

    def wait(self, predicate, timeout: float = 10.0) -> list[dict]:  # type: ignore[no-untyped-def]
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.events):
                return self.events
            time.sleep(0.02)
        raise AssertionError(f"events never arrived: {self.events}")


@pytest.fixture
def recorded(stub: StubUpstream, tmp_path: Path) -> tuple[FastrouteProcess, Path]:
    log_path = tmp_path / "logs" / "requests.jsonl"
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, log_path))
    proc = FastrouteProcess([str(conf)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}).start()
    yield proc, log_path
    proc.stop()


def test_events_log_and_metrics_for_every_request(recorded: tuple[FastrouteProcess, Path]) -> None:
    proc, log_path = recorded
    feed = Feed(proc.url)
    client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="client-secret", max_retries=0)
    client.chat.completions.create(model="gpt-x", messages=USER)
    chunks = list(client.chat.completions.create(model="gpt-x", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stub: hello big world"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-x", messages=[{"role": "wizard", "content": "x"}])
    events = feed.wait(lambda evs: sum(e["type"] == "complete" for e in evs) >= 3)
    first = events[0]["id"]
    assert [e["type"] for e in events if e.get("id") == first] == ["start", "classified", "routed", "complete"]
    start = next(e for e in events if e["type"] == "start")
    assert set(start) >= {"id", "ts_ms", "model", "in_flight"}
    assert next(e for e in events if e["type"] == "classified")["tags"] == ["greeting"]
    routed = next(e for e in events if e["type"] == "routed")
    assert (routed["provider"], routed["model"]) == ("stub", "gpt-x")
    completes = [e for e in events if e["type"] == "complete"]
    streamed = next(e for e in completes if e["stream"])
    assert streamed["response"] == "stub: hello big world" and streamed["usage"]["output_tokens"] == 4
    assert streamed["ttft_ms"] is not None and streamed["cost_usd"] > 0
    assert completes[-1]["status"] == 400 and "messages[0].role" in completes[-1]["error"]

    metrics = httpx.get(f"{proc.url}/metrics").text
    # gpt-x is the client's name (the catch-all rule routes it): no label of its own
    assert 'fastroute_requests_total{model="other",provider="stub",status="200"} 2.0' in metrics
    assert "fastroute_time_to_first_token_seconds_count" in metrics
    assert 'fastroute_tokens_total{direction="out",model="other",provider="stub"}' in metrics
    assert "fastroute_in_flight_requests 0.0" in metrics

    assert proc.stop() == 0  # a clean stop: everything answered is in the log
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == 3
    for field in ("ts_ms", "provider", "requested_model", "sent_model", "duration_ms", "tags", "plugins", "system",
                  "messages", "response", "error", "id", "usage", "ttft_ms", "attempts"):
        assert field in lines[0], field
    logged_stream = next(line for line in lines if line["stream"])
    assert logged_stream["response"] == "stub: hello big world"  # streams are logged assembled
    assert logged_stream["messages"] == [{"role": "user", "content": "hello big world"}]
    everything = log_path.read_text() + json.dumps(events) + metrics
    assert PROVIDER_KEY not in everything and "client-secret" not in everything


def test_new_viewer_sees_recent_history(recorded: tuple[FastrouteProcess, Path]) -> None:
    proc, _ = recorded
    httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "echo", "messages": USER})
    feed = Feed(proc.url)  # connects after the request
    events = feed.wait(lambda evs: any(e["type"] == "complete" for e in evs))
    assert events[-1]["requested_model"] == "echo"


def test_failover_attempts_show_in_the_events_and_the_log(recorded: tuple[FastrouteProcess, Path]) -> None:
    proc, log_path = recorded
    feed = Feed(proc.url)
    resp = httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "failover-x", "messages": USER}, timeout=30)
    assert resp.status_code == 200 and resp.headers["x-router-attempts"] == "2"
    rid = resp.headers["x-request-id"]
    events = feed.wait(lambda evs: any(e["type"] == "complete" and e["id"] == rid for e in evs))
    mine = [e for e in events if e.get("id") == rid]
    # one routed event per attempt, before each upstream call
    assert [(e["provider"], e["model"]) for e in mine if e["type"] == "routed"] == [("dead", "failover-x"),
                                                                                  ("stub", "failover-x")]
    complete = mine[-1]
    assert proc.stop() == 0
    logged = next(json.loads(line) for line in log_path.read_text().splitlines() if json.loads(line)["id"] == rid)
    for entry in (complete, logged):  # what was tried, and why the first did not do
        first, second = entry["attempts"]
        assert first["provider"] == "dead" and first["status"] == 502
        assert "provider 'dead'" in first["error"]
        assert (second["provider"], second["status"], second["error"]) == ("stub", 200, None)
        assert entry["provider"] == "stub" and entry["response"] == "stub: hello big world"


def test_dashboard_page_is_self_contained(recorded: tuple[FastrouteProcess, Path]) -> None:
    proc, _ = recorded
    page = httpx.get(f"{proc.url}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "fetch(\"/dashboard/events\"" in page.text  # the feed, same origin
    # the SVG namespace is a name, never fetched
    text = page.text.replace('"http://127', "").replace('"http://www.w3.org/2000/svg"', "")
    for outside in ("http://", "https://", "//cdn"):
        assert outside not in text  # no CDN, works offline


def test_slow_subscriber_is_dropped_and_publishing_never_waits() -> None:
    async def scenario() -> None:
        bus = EventBus(history=5, queue_size=3)
        fast, _ = bus.subscribe()
        slow, _ = bus.subscribe()
        for i in range(4):  # a queue holds queue_size events, plus room for the end marker
            bus.publish({"type": "x", "i": i})
        assert await fast.get() and bus.subscribers == 2
        bus.publish({"type": "x", "i": 4})  # slow never reads: it is dropped, fast is not
        assert slow.dropped and not fast.dropped and bus.subscribers == 1
        later, history = bus.subscribe()
        assert [json.loads(h)["i"] for h in history] == [0, 1, 2, 3, 4]
        bus.close_all()
        assert await later.get() == b""

    asyncio.run(scenario())


def test_events_from_every_worker_reach_every_viewer(stub: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, tmp_path / "log.jsonl"))
    proc = FastrouteProcess([str(conf), "--workers", "2"], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY},
                            workers=2).start()
    try:
        feeds = [Feed(proc.url) for _ in range(4)]  # the kernel spreads connections over both workers
        for i in range(12):  # a fresh connection each, so requests land on both workers
            httpx.post(f"{proc.url}/v1/chat/completions",
                       json={"model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]})
        for feed in feeds:
            evs = feed.wait(lambda evs: len({e["id"] for e in evs if e["type"] == "complete"}) >= 12)
            assert len({e["id"] for e in evs if e["type"] == "complete"}) == 12
            assert len({e["worker"] for e in evs if e["type"] == "complete"}) == 2  # both workers answered
        metrics = httpx.get(f"{proc.url}/metrics").text
        assert 'fastroute_requests_total{model="echo",provider="echo",status="200"} 12.0' in metrics
    finally:
        proc.stop()
