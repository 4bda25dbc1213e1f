"""The terminal monitor driven by Textual's pilot, against a real fastroute process; and watch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fastroute.tui.app import MonitorApp
from fastroute.tui.watch import format_event
from tests.conftest import ROOT, FastrouteProcess

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
                httpx.post(f"{proc.url}/v1/chat/completions",
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
                    "status": 200, "duration_ms": 12.0, "usage": {"input_tokens": 5, "output_tokens": 7},
                    "tags": ["code"], "attempts": []}):
            app.show_event(ev)
        await pilot.pause()

    app = MonitorApp("http://127.0.0.1:8090", follow_feed=False)
    assert snap_compare(app, terminal_size=(120, 32), run_before=fill)


def test_watch_prints_lines_and_json(server: FastrouteProcess) -> None:
    def run(*extra: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "fastroute", "watch", server.url, "--count", "4", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(1.0)
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
                                  capture_output=True, text=True, cwd=ROOT, timeout=30,
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
