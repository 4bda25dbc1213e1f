"""The terminal monitor driven by Textual's pilot, against a real fastroute process; and watch."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fastroute.tui.app import Figures, MonitorApp, Spend
from fastroute.tui.watch import format_event
from tests import spend
from tests.conftest import ROOT, FastrouteProcess
from tests.stub_upstream import StubUpstream

CONFIG = """
[server]
dashboard = true
[[providers]]
name = "echo"
format = "echo"
[[routers]]
type = "prefix"
model_prefix = ""
provider = "echo"
"""


@pytest.fixture
def server(tmp_path: Path) -> FastrouteProcess:
    conf = tmp_path / "c.toml"
    conf.write_text(CONFIG)
    proc = FastrouteProcess([str(conf)]).start()
    yield proc
    proc.stop()


async def wait_until(pilot, predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting in the TUI")
        await pilot.pause(0.05)


def lines(app: MonitorApp, widget: str) -> str:
    return "\n".join(str(line.text) for line in app.query_one(widget).lines)


def test_chat_streams_a_reply_and_the_feed_shows_it(server: FastrouteProcess) -> None:
    async def scenario() -> None:
        app = MonitorApp(server.url)
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_until(pilot, lambda: "connected" in app.status_text)
            await pilot.press("tab")
            assert app.focused is app.query_one("#chat-input")
            await pilot.press(*":model echo-bot")
            await pilot.press("enter")
            assert app.model == "echo-bot"
            await pilot.press(*"hello from the tui")
            await pilot.press("enter")
            await wait_until(pilot, lambda: "echo-bot: hello from the tui" in lines(app, "#chat-log"))
            # the same request, seen by the pipeline feed and the figures
            await wait_until(pilot, lambda: "echo/echo-bot 200" in lines(app, "#feed"))
            feed = lines(app, "#feed")
            assert "→" in feed and "routed to echo echo-bot" in feed
            assert app.query_one("#stats").row_count >= 1
            await pilot.press("escape")
            assert app.focused is app.query_one("#feed")
            await pilot.press("k", "j", "up", "down")  # scrolling keys do not leave the feed
            assert app.focused is app.query_one("#feed")
            await pilot.press("q")
        assert app.return_code == 0 or app.return_code is None

    asyncio.run(scenario())


def test_reconnects_when_the_server_restarts(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(CONFIG)
    proc = FastrouteProcess([str(conf)]).start()

    async def scenario() -> None:
        app = MonitorApp(proc.url)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_until(pilot, lambda: "connected to" in app.status_text)
            proc.stop()
            await wait_until(pilot, lambda: "cannot reach" in app.status_text or "closed the feed" in app.status_text)
            again = FastrouteProcess([str(conf)])
            again.port = proc.port
            again.start()
            try:
                await wait_until(pilot, lambda: app.status_text.startswith("reconnected"), timeout=20)
                await asyncio.to_thread(httpx.post, f"{proc.url}/v1/chat/completions",
                                        json={"model": "after-restart", "messages": [{"role": "user", "content": "x"}]})
                await wait_until(pilot, lambda: "after-restart" in lines(app, "#feed"))
            finally:
                again.stop()

    asyncio.run(scenario())


def test_layout_snapshot(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    async def fill(pilot) -> None:  # type: ignore[no-untyped-def]
        app = pilot.app
        app.set_status("connected to http://127.0.0.1:8090")
        for ev in ({"type": "start", "id": "req_0000000a", "ts_ms": 0, "model": "gpt-x", "in_flight": 1,
                    "dialect": "openai"},
                   {"type": "routed", "id": "req_0000000a", "ts_ms": 0, "provider": "stub", "model": "gpt-x", "rule": 2},
                   {"type": "complete", "id": "req_0000000a", "ts_ms": 0, "provider": "stub", "sent_model": "gpt-x",
                    "status": 200, "duration_ms": 12.0, "key_name": "alice", "session": "sess-1",
                    "usage": {"input_tokens": 5, "output_tokens": 7, "cached_input_tokens": 2}, "cost_micros": 123,
                    "cost_usd": 0.000123, "tags": ["code"], "attempts": []}):
            app.show_event(ev)
        await pilot.pause()

    app = MonitorApp("http://127.0.0.1:8090", follow_feed=False)
    assert snap_compare(app, terminal_size=(120, 32), run_before=fill)


def test_layout_snapshot_by_key(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The figures' second tab: cost and tokens by key, the biggest first, a request without a key as "—"."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()

    async def fill(pilot) -> None:  # type: ignore[no-untyped-def]
        app = pilot.app
        app.set_status("connected to http://127.0.0.1:8090")
        for i, (key, micros) in enumerate((("alice", 1234), ("bob", 98_765), (None, None), ("alice", 0))):
            app.show_event({"type": "complete", "id": f"req_{i:08d}", "ts_ms": 0, "provider": "stub",
                            "sent_model": "gpt-x", "status": 200, "duration_ms": 12.0, "key_name": key,
                            "session": f"sess-{i % 2}", "cost_micros": micros, "attempts": [],
                            "usage": {"input_tokens": 1000 * (i + 1), "output_tokens": 7, "cached_input_tokens": i}})
        await pilot.press("f")
        await pilot.pause()

    app = MonitorApp("http://127.0.0.1:8090", follow_feed=False)
    assert snap_compare(app, terminal_size=(120, 32), run_before=fill)


def test_figures_stay_bounded() -> None:
    """A monitor left open for days: the counts stay exact, the memory does not grow with them."""
    figures = Figures()
    for i in range(1500):
        assert figures.add({"type": "complete", "id": f"r{i}", "provider": "p", "duration_ms": float(i), "status": 200,
                            "key_name": "k", "session": f"s{i:04d}", "cost_micros": i,
                            "usage": {"input_tokens": 1, "output_tokens": 2}})
    assert not figures.add({"type": "complete", "id": "r7", "provider": "p"})  # a replayed event counts once
    # every request counted; p50 and p95 of the last 1000 (500 .. 1499): 999.5 and 1450 (of all: 749.5, 1425)
    assert figures.rows()[0] == ("p", "1500", "0", "1000", "1450", str(1500 * 3))
    assert figures.by_key.rows() == [("k", "1500", spend.usd(sum(range(1500))), "1500", "3000", "0")]
    sessions = figures.by_session.rows()
    assert len(figures.by_session.names) <= Spend.KEEP and len(sessions) == Spend.ROWS + 1
    assert [row[0] for row in sessions[:-1]] == [f"s{i:04d}" for i in range(1499, 1491, -1)]
    assert sessions[-1] == ("others (1492)", "1492", spend.usd(sum(range(1492))), "1492", str(1492 * 2), "0")
    for i in range(6000):
        figures.add({"type": "complete", "id": f"q{i}", "provider": "q"})
    assert len(figures.seen) == len(figures.order) == 5000


def table_rows(app: MonitorApp, widget: str) -> list[list[str]]:
    table = app.query_one(widget)
    return [[str(cell) for cell in table.get_row(key)] for key in table.rows]


def on_screen(shown: str, row: list[str]) -> bool:
    """Whether the screen shows ``row``'s cells on one line, in order, apart only by spaces."""
    return re.search(r" +".join(re.escape(cell) for cell in row if cell), shown) is not None


def cut(rows: list[list[str]]) -> list[list[str]]:
    """Rows as the TUI shows them: a name over 20 characters cut to 19 and an ellipsis."""
    return [[name if len(name) <= 20 else name[:19] + "…", *rest] for name, *rest in rows]


def test_cost_and_tokens_by_key_and_by_session(stub: StubUpstream, tmp_path: Path) -> None:
    """Two keys, sessions, priced models through a real fastroute: the TUI's by-key and by-session tabs
    sum exactly what was sent, live and from the history a new viewer gets, and ``f`` shows each."""
    conf = tmp_path / "c.toml"
    conf.write_text(spend.config(stub))
    proc = FastrouteProcess([str(conf)], env=spend.ENV).start()
    send = spend.Sender(proc.url)
    long_session = "0f8e5a2c-6b1d-4c3e-9a7f-2d4b6c8e0a1f-and-more"
    # before the monitor starts: it gets these from the feed's history
    send("alice", "sess-one", "stub-alpha", "one two three")
    send("bob", "sess-two", "stub-beta", "x y z w", header="x-claude-code-session-id")

    async def scenario() -> None:
        app = MonitorApp(proc.url, api_key=spend.ADMIN)
        async with app.run_test(size=(160, 40)) as pilot:  # the figures pane is 64 wide: every column shows
            await wait_until(pilot, lambda: "connected" in app.status_text)
            await wait_until(pilot, lambda: table_rows(app, "#by-key") == send.rows("key_name"))
            # live: more keys' requests, one without a session, one failing, more sessions than rows
            await asyncio.to_thread(send, "alice", None, "stub-alpha", "a b")
            await asyncio.to_thread(send, "bob", "sess-two", "stub-error-500", "boom")
            await asyncio.to_thread(send, "bob", long_session, "stub-alpha", "long")
            await asyncio.to_thread(send, "bob", "sess-two", "stub-unpriced", "free")  # no price: the provider's 0
            for i in range(1, 9):
                await asyncio.to_thread(send, "alice", f"extra-{i}", "stub-beta", "e")
            by_key, by_session = send.rows("key_name"), cut(send.rows("session"))
            assert by_session[-1][0] == "others (4)" and ["—", "1", "0.000055", "5", "3", "2"] in by_session
            await wait_until(pilot, lambda: table_rows(app, "#by-session") == by_session)
            assert table_rows(app, "#by-key") == by_key
            # by hand: alice 70 + 55 + 8 × 26 µ$ (69.6, 54.6, 26.25 rounded); bob 56 + 40 (56.25, 39.6), an error
            # (no usage) and a free model
            assert by_key == [["alice", "10", "0.000333", "50", "23", "20"], ["bob", "4", "0.000096", "15", "9", "6"]]

            figures = app.query_one("#figures")
            assert figures.active == "tab-providers"
            await pilot.press("f")
            assert figures.active == "tab-keys"
            await pilot.pause()
            shown = screen_text(app)
            assert all(on_screen(shown, row) for row in by_key)
            await pilot.press("f")
            assert figures.active == "tab-sessions"
            await pilot.pause()
            shown = screen_text(app)
            assert all(on_screen(shown, row) for row in by_session)
            assert "0f8e5a2c-6b1d-4c3e-…" in shown and long_session not in shown
            await pilot.press("f")
            assert figures.active == "tab-providers"
            # the feed's line for a request carries its key and its cost
            assert f"key=bob ${spend.usd(spend.cost_micros('stub-beta', *spend.stub_usage('x y z w')))}" in lines(
                app, "#feed")
            await pilot.press("q")

    try:
        asyncio.run(scenario())
    finally:
        proc.stop()


def test_watch_prints_lines_and_json(server: FastrouteProcess) -> None:
    def run(*extra: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "fastroute", "watch", server.url, "--count", "4", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        # before or after watch connects, the same: a new viewer gets the history first
        httpx.post(f"{server.url}/v1/chat/completions", json={"model": "watched", "messages": [
            {"role": "user", "content": "hi"}]})
        out, err = proc.communicate(timeout=30)
        assert "connected to" in err
        return out

    plain = run()
    assert "\033[" not in plain  # piped: no colour
    assert "watched" in plain and "routed to echo" in plain and "✓" in plain
    raw = run("--json").splitlines()
    import json

    kinds = [json.loads(line)["type"] for line in raw]
    assert kinds[:4] == ["start", "classified", "routed", "complete"] or "complete" in kinds


def test_watch_lines_carry_the_key_and_the_cost(stub: StubUpstream, tmp_path: Path) -> None:
    """A real fastroute with keys and prices: each request's line names its key and what it cost."""
    conf = tmp_path / "c.toml"
    conf.write_text(spend.config(stub))
    proc = FastrouteProcess([str(conf)], env=spend.ENV).start()
    try:
        send = spend.Sender(proc.url)
        send("alice", "sess-one", "stub-alpha", "one two three")
        send("bob", None, "stub-beta", "x y z w")
        send("bob", None, "stub-error-500", "boom")
        watched = subprocess.run([sys.executable, "-m", "fastroute", "watch", proc.url, "--count", "12",
                                  "--api-key", spend.ADMIN], check=False, capture_output=True, text=True, cwd=ROOT,
                                 timeout=30)  # the history: 3 requests × start, classified, routed, complete
        done = [line for line in watched.stdout.splitlines() if " ✓ " in line or " ✗ " in line]
        assert len(done) == 3, watched.stdout + watched.stderr
        alpha = spend.cost_micros("stub-alpha", *spend.stub_usage("one two three"))  # 69.6 µ$, rounded
        beta = spend.cost_micros("stub-beta", *spend.stub_usage("x y z w"))
        assert (alpha, beta) == (70, 56)
        assert done[0].endswith("tokens 5/4 key=alice $0.000070")
        assert done[1].endswith("tokens 5/5 key=bob $0.000056")
        assert " key=bob " in done[2] and "$" not in done[2]  # no usage, no cost
        assert all(secret not in watched.stdout + watched.stderr for secret in (spend.ALICE, spend.BOB, spend.ADMIN))
    finally:
        proc.stop()


def test_watch_line_key_and_cost() -> None:
    """The key when there is one, the cost when it is known (a known 0 too), exactly to the micro-dollar."""
    base = {"type": "complete", "id": "req_1", "ts_ms": 0, "provider": "p", "sent_model": "m", "status": 200,
            "duration_ms": 3.0, "usage": {"input_tokens": 5, "output_tokens": 2}}
    line = format_event({**base, "key_name": "alice", "cost_micros": 123, "cost_usd": 0.000123}, colour=False)
    assert line.endswith("tokens 5/2 key=alice $0.000123")
    assert format_event({**base, "key_name": "ci", "cost_micros": 12_345_678_901}, colour=False).endswith(
        "key=ci $12345.678901")
    assert format_event({**base, "cost_usd": 0.25}, colour=False).endswith("tokens 5/2 $0.250000")  # no micros
    free = format_event({**base, "key_name": None, "cost_micros": 0, "cost_usd": 0.0}, colour=False)
    assert free.endswith("tokens 5/2 $0.000000") and "key=" not in free
    unpriced = format_event({**base, "key_name": "a\x1b[2Jb", "cost_micros": None, "cost_usd": None}, colour=True)
    assert "key=a␛[2Jb" in unpriced and "$" not in unpriced


def test_watch_line_format() -> None:
    line = format_event({"type": "complete", "id": "req_1234567890", "ts_ms": 0, "provider": "p", "sent_model": "m",
                         "status": 502, "duration_ms": 10.0, "error": "provider 'p' failed",
                         "attempts": [{}, {}]}, colour=True)
    assert "\033[31m✗" in line and "after 2 attempts" in line and "provider 'p' failed" in line


def test_watch_lines_show_control_characters() -> None:
    """A model name is one line on the terminal: its escapes and newlines are shown, not obeyed."""
    line = format_event({"type": "routed", "id": "req_1", "ts_ms": 0, "provider": "p", "rule": 0,
                         "model": "m\x1b[2J\nfake line\x9b"}, colour=True)
    assert "m␛[2J␊fake line\\x9b" in line and "\n" not in line and "\x9b" not in line
    assert line.count("\x1b") == line.count("\x1b[") == 6  # only its own colours: dim, bold, resets


def test_a_server_that_wants_a_key(tmp_path: Path) -> None:
    conf = tmp_path / "k.toml"
    conf.write_text(CONFIG.replace("dashboard = true", 'dashboard = true\napi_key_env = "FR_TEST_SERVER_KEY"'))
    proc = FastrouteProcess([str(conf)], env={"FR_TEST_SERVER_KEY": "let-me-in"}).start()
    try:
        def watch(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "fastroute", "watch", proc.url, "--count", "1", *extra],
                                  check=False, capture_output=True, text=True, cwd=ROOT, timeout=30,
                                  env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})

        # retrying cannot help: watch says why and stops, instead of retrying forever
        missing = watch()
        assert missing.returncode == 2 and "requires its API key: pass --api-key" in missing.stderr
        wrong = watch("--api-key", "nope")
        assert wrong.returncode == 2 and "refused the API key (HTTP 401)" in wrong.stderr
        assert "nope" not in wrong.stderr + wrong.stdout

        async def scenario() -> None:
            app = MonitorApp(proc.url)  # no key: the status line says so, the app stays up
            async with app.run_test(size=(140, 40)) as pilot:
                await wait_until(pilot, lambda: "requires its API key" in app.status_text)
            keyed = MonitorApp(proc.url, api_key="let-me-in")
            async with keyed.run_test(size=(140, 40)) as pilot:
                await wait_until(pilot, lambda: "connected" in keyed.status_text)

        asyncio.run(scenario())
    finally:
        proc.stop()


MARKUP_CONFIG = """
[server]
dashboard = true
[classifiers.keyword]
enabled = true
[classifiers.keyword.tags]
"[i]tagged" = ["look"]
[[providers]]
name = "echo[/b]"
format = "echo"
[[routers]]
type = "prefix"
model_prefix = ""
provider = "echo[/b]"
"""

#: what a client or a provider may send: a closing tag with nothing open, styles, a link, a half tag
MARKUP_REPLY = "look: [/b] [red]red[/red] [link=https://example.com]x[/link] [b"
MARKUP_MODEL = "m[/i][red]x"
#: escape sequences that would clear the terminal and retitle its window; shown, never sent
CONTROLS, SHOWN = "\x1b[2J\x1b]0;pwned\x07", "␛[2J␛]0;pwned␇"


def screen_text(app: MonitorApp) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def test_text_from_clients_and_providers_is_shown_as_it_is(tmp_path: Path) -> None:
    """Replies, prompts, model and provider names, tags and status lines are never read as markup:
    ``[/b]`` used to crash the monitor, ``[red]`` to vanish into a colour."""
    conf = tmp_path / "m.toml"
    conf.write_text(MARKUP_CONFIG)
    proc = FastrouteProcess([str(conf)]).start()

    async def scenario() -> None:
        app = MonitorApp(proc.url)
        async with app.run_test(size=(200, 44)) as pilot:  # a log line over 78 columns would wrap
            await wait_until(pilot, lambda: "connected" in app.status_text)
            await pilot.press("tab")
            chat = app.query_one("#chat-input")
            chat.value = f":model {MARKUP_MODEL}"
            await pilot.press("enter")
            chat.value = MARKUP_REPLY
            await pilot.press("enter")
            reply = f"{MARKUP_MODEL}: {MARKUP_REPLY}"
            await wait_until(pilot, lambda: reply in lines(app, "#chat-log"))
            chat.value = f"and {CONTROLS}"
            await pilot.press("enter")
            await wait_until(pilot, lambda: f"{MARKUP_MODEL}: and {SHOWN}" in lines(app, "#chat-log"))
            await wait_until(pilot, lambda: app.query_one("#stats").row_count >= 2)
            app.set_status("cannot reach http://[::1]:8090 [/b]; retrying every 1 s")
            await pilot.pause()
            shown = screen_text(app)
            assert f"you: {MARKUP_REPLY}" in shown and reply in shown  # prompt and reply, brackets and all
            assert f"you: and {SHOWN}" in shown and f"{MARKUP_MODEL}: and {SHOWN}" in shown
            assert "\x1b" not in shown and "\x07" not in shown  # the terminal gets no escape of theirs
            assert f"model {MARKUP_MODEL}" in shown  # the chat pane's title
            assert f"routed to echo[/b] {MARKUP_MODEL}" in shown  # the feed
            assert "echo[/b]" in lines(app, "#feed")
            stats = [str(cell) for row in app.query_one("#stats").rows
                     for cell in app.query_one("#stats").get_row(row)]
            assert "echo[/b]" in stats and "tag:[i]tagged" in stats
            assert "echo[/b]" in shown.split("by provider")[1] and "tag:[i]tagged" in shown
            assert "cannot reach http://[::1]:8090 [/b]; retrying" in shown  # the status line
            await pilot.press("escape", "q")
        assert app.return_code in (0, None)

    try:
        asyncio.run(scenario())
    finally:
        proc.stop()
