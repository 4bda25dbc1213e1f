"""Every way out of a request ends its exchange exactly once.

In process: the real pipeline and providers over a scripted upstream client (what each call
answers, chunk by chunk, with errors, hangs and odd events where the script says), and the
real server-side stream body (``fastroute.server.streaming``) where a test plays the server.
Each test asserts the four things an ending owes: the upstream closed, the breaker trial settled
(every test request is a half-open breaker's one trial), nothing left in flight, and exactly one
log line and one ``complete`` event saying how it ended.

Over the wire, a real ``fastroute serve``: a client that sends a streaming request and closes
before reading anything leaves nothing in flight and a 499 in the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fastroute.config import config_from_dict
from fastroute.errors import UpstreamTimeout
from fastroute.formats import anthropic as anthropic_dialect
from fastroute.formats import openai as openai_dialect
from fastroute.pipeline import CLIENT_CLOSED, Answer, Pipeline, StreamAnswer
from fastroute.plugins import Plugin
from fastroute.providers import build_providers
from fastroute.providers.transport import Reply, Timeouts
from fastroute.recording.events import EventBus
from fastroute.recording.recorder import Recorder
from fastroute.routing import Router
from fastroute.routing.health import Health
from fastroute.server.streaming import StreamBody
from tests.conftest import FastrouteProcess
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hi"}]
HANG = object()  # in a script: wait until cancelled


def event(text: str) -> bytes:
    return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": {"content": text},
                                                  "finish_reason": None}]}) + b"\n\n"


DONE = b"data: [DONE]\n\n"
COMPLETION = orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


# ── the scripted upstream ─────────────────────────────────────────────────

class Stream:
    """One scripted streamed answer: its status, then its chunks (bytes, an exception, or HANG)."""

    def __init__(self, client: Scripted, status: int, steps: list[Any]) -> None:
        self.client, self.status, self.steps = client, status, list(steps)
        self.headers: dict[str, str] = {}
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.steps:
            step = self.steps.pop(0)
            if step is HANG:
                await asyncio.Event().wait()
            if isinstance(step, BaseException):
                raise step
            yield step

    async def read(self) -> bytes:
        return b"".join(s for s in self.steps if isinstance(s, bytes))

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.open -= 1


class Scripted:
    """An upstream client: each call to a host takes that host's next step.  A step is a Stream's
    (status, chunks) for a streamed call, (status, body) for a plain one, an exception to raise, or HANG."""

    name = "scripted"

    def __init__(self) -> None:
        self.script: dict[str, list[Any]] = {}
        self.calls: list[str] = []
        self.open = 0  # streamed replies not yet closed
        self.streams: list[Stream] = []

    def _step(self, url: str) -> Any:
        host = httpx.URL(url).host
        self.calls.append(host)
        steps = self.script.get(host) or []
        return steps.pop(0) if steps else (200, [event("fine"), DONE])

    async def _begin(self, url: str) -> Any:
        step = self._step(url)
        if step is HANG:
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        return step

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Reply:
        status, answer = await self._begin(url)
        return Reply(status, {}, answer if isinstance(answer, bytes) else COMPLETION)

    async def stream(self, url: str, headers: dict[str, str], body: bytes, timeouts: Timeouts) -> Stream:
        status, steps = await self._begin(url)
        self.open += 1
        stream = Stream(self, status, steps if isinstance(steps, list) else [steps])
        self.streams.append(stream)
        return stream

    async def get_json(self, url: str, headers: dict[str, str], timeouts: Timeouts) -> Any:
        raise AssertionError("no discovery here")

    async def aclose(self) -> None:
        pass


class Lines:
    """The request log: the entries written."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def write(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Plugin):
    """Fails in the hook its settings name."""

    id = "boom"

    async def _maybe(self, hook: str) -> None:
        if self.settings.get("fail") == hook:
            raise RuntimeError(f"boom in {hook}")

    async def on_start(self, ctx: Any) -> Any:
        await self._maybe("on_start")

    async def post_response(self, ctx: Any) -> Any:
        await self._maybe("post_response")

    async def on_end(self, ctx: Any) -> None:
        await self._maybe("on_end")


class World:
    """A pipeline over the scripted client; the provider ``up`` (fallback ``backup``) is half open,
    so each request is its breaker's trial."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        data: dict[str, Any] = {
            "failover": {"breaker_threshold": 1, "breaker_cooldown_s": 30, "max_attempts": 2, "backoff_ms": 1},
            "providers": [{"name": "up", "format": "openai", "base_url": "http://up.test/v1"},
                          {"name": "backup", "format": "openai", "base_url": "http://backup.test/v1"}],
            "routers": [{"type": "prefix", "model_prefix": "failover", "provider": "up", "fallbacks": ["backup"]},
                        {"type": "prefix", "model_prefix": "", "provider": "up"}]}
        if max_event_bytes is not None:
            data["server"] = {"max_stream_line_bytes": max_event_bytes}
        config = config_from_dict(data)
        self.client = Scripted()
        providers = build_providers(config, self.client)  # type: ignore[arg-type]
        self.clock = Clock()
        self.health = Health(config.failover, self.clock)
        self.bus = EventBus()
        self.lines = Lines()
        recorder = Recorder(self.bus, log=self.lines)  # type: ignore[arg-type]
        self.pipeline = Pipeline(config, providers, Router(config, providers, self.health.available),
                                 self.health, recorder)
        self.pipeline.plugins.classes["boom"] = Boom
        for name in ("up", "backup"):  # half open: the next request to each is its trial
            self.health.failure(name)
        self.clock.now += 31
        assert self.health.state("up") == "half-open"

    def completes(self) -> list[dict[str, Any]]:
        return [e for e in map(orjson.loads, self.bus.recent()) if e["type"] == "complete"]

    def ended_once(self, status: int, error: str | None = "", *, breaker: str = "closed") -> dict[str, Any]:
        """The four things every ending owes; returns the log entry."""
        assert self.client.open == 0, "an upstream reply was left open"
        for name in ("up", "backup"):
            assert not self.health._breakers[name].trial_running, f"{name}'s breaker trial never settled"
        assert self.health.state("up") == breaker
        assert self.pipeline.in_flight == 0
        assert len(self.lines.entries) == 1, self.lines.entries
        (entry,), (complete,) = self.lines.entries, self.completes()
        assert entry["status"] == complete["status"] == status
        assert complete["in_flight"] == 0
        if error is None:
            assert entry["error"] is None
        else:
            assert error in (entry["error"] or ""), entry["error"]
        return entry

    async def ask(self, body: dict[str, Any], dialect: Any = openai_dialect) -> Answer | StreamAnswer:
        return await self.pipeline.dispatch(dialect, {"model": "m", "messages": USER, **body}, None)


async def serve(answer: Answer | StreamAnswer, receive: Any = None) -> bytes:
    """What the server does with an answer: the body, through the real stream body."""
    if isinstance(answer, Answer):
        return answer.body
    return b"".join([chunk async for chunk in StreamBody(answer, receive).chunks()])


def run(coro: Any) -> Any:
    """``asyncio.run`` without its clean-up: what the test did not end is still open when it checks
    (the runner would close forgotten generators and cancel forgotten tasks for it)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# ── success ────────────────────────────────────────────────────────────────

def test_a_json_answer_ends_once() -> None:
    w = World()
    w.client.script["up.test"] = [(200, COMPLETION)]
    answer = run(w.ask({}))
    assert answer.status == 200 and b"fine" in answer.body
    entry = w.ended_once(200, None)
    assert entry["usage"]["input_tokens"] + entry["usage"]["output_tokens"] == 2


def test_a_relayed_stream_ends_once() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), event("lo"), DONE])]

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True}))

    assert run(go()).endswith(DONE)
    assert w.ended_once(200, None)["response"] == "hello"


def test_a_translated_stream_ends_once() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), event("lo"), DONE])]

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True, "max_tokens": 10}, anthropic_dialect))

    assert b"message_stop" in run(go())
    assert w.ended_once(200, None)["response"] == "hello"


# ── upstream failures ──────────────────────────────────────────────────────

def test_a_5xx_fails_over_and_ends_once() -> None:
    w = World()
    w.client.script["up.test"] = [(500, b'{"error": {"message": "down"}}')]

    async def go() -> bytes:
        return await serve(await w.pipeline.dispatch(openai_dialect, {"model": "failover-x", "messages": USER,
                                                                     "stream": True}, None))

    assert run(go()).endswith(DONE)
    entry = w.ended_once(200, None, breaker="open")  # up's trial failed: open again
    assert w.health.state("backup") == "closed"
    assert [a["provider"] for a in entry["attempts"]] == ["up", "backup"] and entry["attempts"][0]["status"] == 502


def test_a_timeout_before_the_first_byte_is_a_504() -> None:
    w = World()
    w.client.script["up.test"] = [UpstreamTimeout("read timeout")]
    answer = run(w.ask({"stream": True}))
    assert answer.status == 504
    w.ended_once(504, "timed out", breaker="open")


def test_a_timeout_mid_stream_ends_with_an_error_event() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), UpstreamTimeout("read timeout")])]

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True}))

    body = run(go())
    assert body.startswith(event("hel")) and b"upstream_timeout" in body and not body.endswith(DONE)
    w.ended_once(504, "timed out")  # it answered 200 first: the breaker heard a success


def test_an_odd_event_ends_a_translated_stream_with_an_error() -> None:
    w = World()
    odd = b'data: {"id": "c", "choices": [null]}\n\n'
    w.client.script["up.test"] = [(200, [event("hel"), odd, event("never")])]

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True, "max_tokens": 10}, anthropic_dialect))

    body = run(go())
    assert b"event: error" in body and b"never" not in body
    w.ended_once(502, "cannot read")


def test_an_unreadable_answer_passed_through_is_logged_as_an_error() -> None:
    w = World()
    w.client.script["up.test"] = [(200, b'{"id": "c", "choi')]
    answer = run(w.ask({}))
    assert answer.status == 200 and answer.body == b'{"id": "c", "choi'  # the client's, as it came
    w.ended_once(200, "provider 'up' answered with a body fastroute cannot read")


def test_an_event_over_the_limit_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    w = World(max_event_bytes=1024)
    w.client.script["up.test"] = [(200, [event("hel"), b"data: " + b"x" * 700, b"x" * 700, event("never")])]

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True}))

    with caplog.at_level(logging.ERROR, "fastroute"):
        body = run(go())
    assert body.startswith(event("hel")) and b"over 1,024 bytes" in body and b"never" not in body
    w.ended_once(502, "sent a stream event of over 1,024 bytes")
    assert any("over 1,024 bytes" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


# ── the client goes, the task is cancelled ─────────────────────────────────

class Receive:
    """An ASGI ``receive``: the body's end, then ``http.disconnect`` once :meth:`go` is called."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_a_client_gone_mid_stream_ends_once_with_499() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), HANG])]

    async def go() -> list[bytes]:
        receive = Receive()
        got = []
        async for chunk in StreamBody(await w.ask({"stream": True}), receive).chunks():
            got.append(chunk)
            receive.gone.set()  # the client reads one chunk and goes; the upstream then hangs
        return got

    assert run(go()) == [event("hel")]
    assert w.client.streams[0].closed
    w.ended_once(CLIENT_CLOSED, "client disconnected")


class FutureReceive:
    """An ASGI ``receive`` as Granian's is: it returns a future (not a coroutine)."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[dict[str, Any]]] = []
        self.gone = False

    def __call__(self) -> asyncio.Future[dict[str, Any]]:
        fut = asyncio.get_running_loop().create_future()
        if not self.futures:  # the first: the end of the request body
            fut.set_result({"type": "http.request", "body": b"", "more_body": False})
        elif self.gone:
            fut.set_result({"type": "http.disconnect"})
        self.futures.append(fut)
        return fut

    def disconnect(self) -> None:
        self.gone = True
        for fut in self.futures:
            if not fut.done():
                fut.set_result({"type": "http.disconnect"})


def test_a_client_is_heard_without_a_task_per_stream() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), HANG])]

    async def go() -> tuple[list[bytes], int]:
        receive = FutureReceive()
        got, tasks = [], 0
        async for chunk in StreamBody(await w.ask({"stream": True}), receive).chunks():
            got.append(chunk)
            await asyncio.sleep(0)
            tasks = len(asyncio.all_tasks())  # this one only: the disconnect is a callback on receive's future
            receive.disconnect()
        return got, tasks

    assert run(go()) == ([event("hel")], 1)
    w.ended_once(CLIENT_CLOSED, "client disconnected")


def test_a_client_gone_while_a_chunk_is_sent_stops_at_the_next() -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("a"), event("b"), event("c"), DONE])]

    async def go() -> list[bytes]:
        receive = FutureReceive()
        got = []
        async for chunk in StreamBody(await w.ask({"stream": True}), receive).chunks():
            got.append(chunk)
            receive.disconnect()  # heard while this chunk is being sent (the send awaits, below)
            await asyncio.sleep(0)
        return got

    got = run(go())
    assert got[0] == event("a") and DONE not in got and len(got) <= 2  # heard within a turn of the loop
    w.ended_once(CLIENT_CLOSED, "client disconnected")


def test_a_cancellation_before_the_first_byte_ends_once_and_releases_the_trial() -> None:
    w = World()
    w.client.script["up.test"] = [HANG]

    async def go() -> None:
        task = asyncio.ensure_future(w.ask({"stream": True}))
        while not w.client.calls:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    w.ended_once(CLIENT_CLOSED, "client disconnected", breaker="half-open")  # no verdict: released


def test_a_cancellation_during_the_failover_backoff_ends_once() -> None:
    w = World()
    w.client.script["up.test"] = [(500, b"{}")]
    w.health.backoff_s = lambda attempt: 3600.0  # type: ignore[method-assign]

    async def go() -> None:
        task = asyncio.ensure_future(w.pipeline.dispatch(openai_dialect, {"model": "failover-x", "messages": USER},
                                                         None))
        while not w.client.calls:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert w.client.calls == ["up.test"]  # backup never tried
    w.ended_once(CLIENT_CLOSED, "client disconnected", breaker="open")


def test_a_stream_never_iterated_is_closed_by_the_server() -> None:
    w = World()

    async def go() -> None:
        answer = await w.ask({"stream": True})
        assert isinstance(answer, StreamAnswer) and w.pipeline.in_flight == 1
        await answer.close()  # what the server's stream body does, had BlackSheep never started it
        await answer.close()  # idempotent
        w.ended_once(CLIENT_CLOSED, "before the stream started")  # by the close itself, the answer still held

    run(go())
    w.ended_once(CLIENT_CLOSED, "before the stream started")


def test_an_exchange_ends_once_however_often_it_is_ended() -> None:
    w = World()
    ex = w.pipeline.new_exchange(openai_dialect)
    w.pipeline.end(ex)
    w.pipeline.end(ex)
    late = w.pipeline.fail(ex, openai_dialect, UpstreamTimeout("too late"))  # still answered, not re-recorded
    assert late.status == 504
    w.ended_once(200, None, breaker="half-open")


@pytest.mark.parametrize("dialect", [openai_dialect, anthropic_dialect], ids=["relayed", "translated"])
def test_a_stream_dropped_unread_still_ends(dialect: Any) -> None:
    w = World()

    async def go() -> None:
        answer = await w.ask({"stream": True, "max_tokens": 10}, dialect)
        StreamBody(answer, Receive())  # handed to a server that never starts it, then dropped
        del answer
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    run(go())
    w.ended_once(CLIENT_CLOSED, "before the stream started")


# ── fastroute's own failures ───────────────────────────────────────────────

def test_a_render_error_mid_stream_ends_with_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    w.client.script["up.test"] = [(200, [event("hel"), event("lo"), DONE])]
    render = anthropic_dialect.StreamRenderer.render

    def broken(self: Any, ev: Any) -> bytes:
        if ev.kind == "text" and ev.text == "lo":
            raise KeyError("a bug")
        return render(self, ev)

    monkeypatch.setattr(anthropic_dialect.StreamRenderer, "render", broken)

    async def go() -> bytes:
        return await serve(await w.ask({"stream": True, "max_tokens": 10}, anthropic_dialect))

    body = run(go())
    assert b"event: error" in body and b"internal error in fastroute: KeyError" in body
    w.ended_once(500, "internal error")


def test_a_render_error_of_a_json_answer_ends_once(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    w.client.script["up.test"] = [(200, COMPLETION)]

    def broken(*args: Any) -> bytes:
        raise ValueError("a bug")

    monkeypatch.setattr(anthropic_dialect, "render_response", broken)
    answer = run(w.ask({"max_tokens": 10}, anthropic_dialect))
    assert answer.status == 500
    w.ended_once(500, "internal error")  # the provider answered: its trial succeeded


def test_a_bug_inside_the_provider_call_releases_the_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    w.client.script["up.test"] = [RuntimeError("a bug in the client")]
    answer = run(w.ask({}))
    assert answer.status == 500
    w.ended_once(500, "internal error", breaker="half-open")


def test_an_error_between_the_upstream_and_the_stream_closes_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    headers = w.pipeline._headers
    calls = []

    def once_broken(ex: Any) -> Any:
        calls.append(ex)
        if len(calls) == 1:
            raise RuntimeError("a bug in the headers")
        return headers(ex)

    monkeypatch.setattr(w.pipeline, "_headers", once_broken)

    async def go() -> Any:
        answer = await w.ask({"stream": True})
        for _ in range(5):
            await asyncio.sleep(0)  # the upstream's release runs
        return answer

    assert run(go()).status == 500
    w.ended_once(500, "internal error")


@pytest.mark.parametrize("hook, status", [("on_start", 500), ("post_response", 200), ("on_end", 200)])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_plugin_failure_ends_once(hook: str, status: int, stream: bool) -> None:
    w = World()

    async def go() -> bytes:
        return await serve(await w.ask({"stream": stream, "plugins": [{"id": "boom", "fail": hook}]}))

    body = run(go())
    if status == 500:
        assert b"plugin 'boom' failed in on_start" in body
        w.ended_once(500, "plugin 'boom' failed", breaker="half-open")  # never sent: no trial taken
    else:
        assert b"fine" in body
        w.ended_once(200, None)


def test_an_after_hook_bug_on_a_json_answer_ends_once(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()

    async def broken(*args: Any) -> bool:
        raise RuntimeError("a bug after the answer")

    monkeypatch.setattr(w.pipeline, "_after", broken)
    answer = run(w.ask({"plugins": [{"id": "boom"}]}))
    assert answer.status == 500
    w.ended_once(500, "internal error")  # the provider answered: closed


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_recording_failure_takes_nothing_down(stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    publish = w.bus.publish

    def broken(event: dict[str, Any]) -> None:
        if event["type"] == "complete":
            raise RuntimeError("the event bus broke")
        publish(event)

    monkeypatch.setattr(w.bus, "publish", broken)

    async def go() -> bytes:
        return await serve(await w.ask({"stream": stream}))

    assert b"fine" in run(go())
    assert w.client.open == 0 and w.pipeline.in_flight == 0 and w.health.state("up") == "closed"
    assert len(w.lines.entries) == 1 and w.lines.entries[0]["status"] == 200  # ended once, not twice


# ── over the wire ──────────────────────────────────────────────────────────

def test_a_client_that_closes_before_reading_leaves_nothing_in_flight(tmp_path: Path, stub: StubUpstream) -> None:
    log_path = tmp_path / "requests.jsonl"
    config = tmp_path / "fastroute.toml"
    config.write_text(f'[logging]\nenabled = true\npath = "{log_path}"\n\n'
                      f'[[providers]]\nname = "stub"\nformat = "openai"\nbase_url = "{stub.base_url}"\n\n'
                      '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "stub"\n')
    server = FastrouteProcess([str(config)]).start()
    try:
        cancelled, asked = stub.cancelled, len(stub.requests)
        body = orjson.dumps({"model": "stub-slow", "stream": True, "messages": USER})
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            # once fastroute has asked the upstream (a client gone while its body is still being read
            # never becomes an exchange), the client goes without reading a byte
            assert stub.wait_for(lambda: len(stub.requests) > asked)
        # the stub would stream for a minute
        deadline = time.monotonic() + 20
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{server.url}/metrics").text
            if log_path.exists():
                entries = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
            if entries and "fastroute_in_flight_requests 0.0" in metrics:
                break
            time.sleep(0.05)
        assert "fastroute_in_flight_requests 0.0" in metrics
        assert [(e["status"], e["requested_model"]) for e in entries] == [(CLIENT_CLOSED, "stub-slow")]
        assert stub.wait_for(lambda: stub.cancelled > cancelled)  # and the upstream request was cut
    finally:
        server.stop()
