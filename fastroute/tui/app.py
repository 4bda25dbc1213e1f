"""``fastroute tui [URL]``: the terminal monitor.

Three panes: the live pipeline feed, running figures by provider, tag and
latency, and a chat that streams replies through the router (``:model NAME``
picks the model).  Keys: ``q`` / Ctrl-C quit, Tab or ``i`` to the chat,
↑↓ or ``j``/``k`` scroll the feed, Enter sends, Esc leaves the input.  It
reconnects by itself when the server restarts, and says so.

Everything shown comes from a client or a provider (replies, prompts, model and
provider names, tags, errors, URLs), so nothing is read as Textual markup: the
logs and lines are plain (``markup=False``), titles and table cells plain text;
and control characters are shown, not sent to the terminal (:mod:`fastroute.tui.text`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import httpx
import orjson
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Input, RichLog, Static

from fastroute._speedups import SSEDecoder
from fastroute.tui.feed import FeedRefused, events
from fastroute.tui.text import lines, one_line
from fastroute.tui.watch import format_event


class Figures:
    """Running figures from ``complete`` events."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.by_provider: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.by_tag: dict[str, int] = defaultdict(int)

    def add(self, ev: dict[str, Any]) -> bool:
        if ev.get("type") != "complete" or ev.get("id") in self.seen:
            return False
        self.seen.add(ev["id"])
        key = ev.get("provider") or "none"
        self.by_provider[key].append(float(ev.get("duration_ms") or 0.0))
        if ev.get("error") or (ev.get("status") or 0) >= 400:
            self.errors[key] += 1
        usage = ev.get("usage") or {}
        self.tokens[key] += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        for tag in (ev.get("tags") or []) + (ev.get("response_tags") or []):
            self.by_tag[tag] += 1
        return True

    def rows(self) -> list[tuple[str, ...]]:
        out = []
        for key, durations in sorted(self.by_provider.items()):
            ordered = sorted(durations)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            out.append((key, str(len(durations)), str(self.errors[key]), f"{statistics.median(ordered):.0f}",
                        f"{p95:.0f}", str(self.tokens[key])))
        for tag, n in sorted(self.by_tag.items()):
            out.append((f"tag:{tag}", str(n), "", "", "", ""))
        return out


def chat_title(model: str) -> Content:
    """The chat pane's title: plain text (a model name is whatever a client typed)."""
    return Content(f"chat — model {one_line(model)} (:model NAME to change)")


def error_text(body: bytes) -> str:
    """What an error answer says: its ``error.message``, else the body (controls made visible)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return lines(body[:300].decode("utf-8", "replace"))
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return lines(error["message"])
    return lines(error or data)


class MonitorApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "fastroute"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("i", "focus_chat", "chat"),
        Binding("j", "scroll_feed(1)", "down", show=False),
        Binding("k", "scroll_feed(-1)", "up", show=False),
        Binding("down", "scroll_feed(1)", show=False),
        Binding("up", "scroll_feed(-1)", show=False),
    ]

    def __init__(self, url: str = "http://127.0.0.1:8090", api_key: str | None = None,
                 model: str = "echo", follow_feed: bool = True) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.figures = Figures()
        self.follow_feed = follow_feed
        self.status_text = f"connecting to {self.url}…"
        self.history: list[dict[str, str]] = []

    def compose(self) -> ComposeResult:
        feed = RichLog(id="feed", wrap=False, markup=False, max_lines=2000)
        feed.border_title = "pipeline"
        feed.can_focus = True
        yield feed
        stats = DataTable(id="stats", cursor_type="none", zebra_stripes=True)
        stats.border_title = "by provider / tag (ms)"
        yield stats
        with Vertical(id="chat-pane") as pane:
            pane.border_title = chat_title(self.model)
            yield RichLog(id="chat-log", wrap=True, markup=False)
            yield Static("", id="chat-reply", markup=False)
            yield Input(placeholder="Enter sends · Esc leaves · :model NAME", id="chat-input")
        yield Static(one_line(self.status_text), id="status", markup=False)

    def on_mount(self) -> None:
        self.query_one("#stats", DataTable).add_columns("provider", "req", "err", "p50", "p95", "tokens")
        self.query_one("#feed", RichLog).focus()
        if self.follow_feed:
            self.follow()

    # the feed -----------------------------------------------------------

    def set_status(self, text: str) -> None:
        self.status_text = text
        self.query_one("#status", Static).update(one_line(text))

    @work(exclusive=True, group="feed")
    async def follow(self) -> None:
        try:
            async for ev in events(self.url, self.api_key, self.set_status):
                self.show_event(ev)
        except FeedRefused as exc:  # retrying would not help: say why, and stay open for the chat
            self.set_status(str(exc))

    def show_event(self, ev: dict[str, Any]) -> None:
        line = format_event(ev, colour=False)
        if line is not None:
            self.query_one("#feed", RichLog).write(line)
        if self.figures.add(ev):
            table = self.query_one("#stats", DataTable)
            table.clear()
            for row in self.figures.rows():
                table.add_row(*(Text(one_line(cell)) for cell in row))  # a str cell would be read as markup

    # keys ---------------------------------------------------------------

    def action_focus_chat(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def action_scroll_feed(self, lines: int) -> None:
        feed = self.query_one("#feed", RichLog)
        feed.scroll_relative(y=lines, animate=False)

    def on_key(self, event: Any) -> None:
        focused = self.focused
        if event.key == "escape" and isinstance(focused, Input):
            self.query_one("#feed", RichLog).focus()
            event.stop()
        elif event.key == "tab" and not isinstance(focused, Input):
            self.action_focus_chat()
            event.stop()

    # the chat -----------------------------------------------------------

    @on(Input.Submitted, "#chat-input")
    def send(self, message: Input.Submitted) -> None:
        text = message.value.strip()
        message.input.value = ""
        if not text:
            return
        log = self.query_one("#chat-log", RichLog)
        if text.startswith(":model"):
            name = text[len(":model"):].strip()
            if name:
                self.model = name
                self.query_one("#chat-pane").border_title = chat_title(self.model)
                log.write(f"· model is now {one_line(name)}")
            else:
                log.write(f"· model is {one_line(self.model)}")
            return
        log.write(f"you: {lines(text)}")
        self.history.append({"role": "user", "content": text})
        self.stream_reply()

    @work(exclusive=True, group="chat")
    async def stream_reply(self) -> None:
        log = self.query_one("#chat-log", RichLog)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "messages": self.history, "stream": True}
        reply: list[str] = []
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=300.0), trust_env=False) as client:
                async with client.stream("POST", f"{self.url}/v1/chat/completions", json=body,
                                         headers=headers) as resp:
                    if resp.status_code != 200:
                        log.write(f"error {resp.status_code}: {error_text(await resp.aread())}")
                        self.history.pop()
                        return
                    decoder = SSEDecoder()
                    async for chunk in resp.aiter_raw():
                        for ev in decoder.feed(chunk):
                            if ev.data == b"[DONE]":
                                continue
                            obj = orjson.loads(ev.data)
                            if "error" in obj:
                                log.write(f"error: {error_text(ev.data)}")
                                return
                            for choice in obj.get("choices") or ():
                                delta = (choice.get("delta") or {}).get("content")
                                if delta:
                                    reply.append(delta)
                                    self.query_one("#chat-reply", Static).update(
                                        f"{one_line(self.model)}: {lines(''.join(reply))}")
        except httpx.HTTPError as exc:
            log.write(f"error: cannot reach {one_line(self.url)} ({type(exc).__name__})")
            self.history.pop()
            return
        text = "".join(reply)
        self.history.append({"role": "assistant", "content": text})
        self.query_one("#chat-reply", Static).update("")
        log.write(f"{one_line(self.model)}: {lines(text)}")


def run(url: str, api_key: str | None = None) -> int:
    MonitorApp(url, api_key).run()
    return 0
