"""``fastroute tui [URL]``: the terminal monitor.

Three panes: the live pipeline feed, running figures (three tabs: by provider
and tag with latency; cost and tokens by client key; by session), and a chat
that streams replies through the router (``:model NAME`` picks the model).
Keys: ``q`` / Ctrl-C quit, Tab or ``i`` to the chat, ``f`` the next figures
tab, ↑↓ or ``j``/``k`` scroll the feed, Enter sends, Esc leaves the input.  It
reconnects by itself when the server restarts, and says so.

Everything shown comes from a client or a provider (replies, prompts, model and
provider names, tags, errors, URLs), so nothing is read as Textual markup: the
logs and lines are plain (``markup=False``), titles and table cells plain text;
and control characters are shown, not sent to the terminal (:mod:`fastroute.tui.text`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from typing import Any, ClassVar

import httpx
import orjson
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Input, RichLog, Static, TabbedContent, TabPane

from fastroute._speedups import SSEDecoder
from fastroute.tui.feed import FeedRefused, events
from fastroute.tui.text import lines, one_line
from fastroute.tui.watch import cost_micros, format_event, usd

#: ids remembered to count a request once (a reconnect replays the server's history: 500 events at most)
SEEN_IDS = 5000
#: latencies kept per provider for its p50 and p95
LATENCIES = 1000


class Spend:
    """Requests, tokens and cost per name (a client key, a session) from ``complete`` events.

    Rows come biggest cost first (then most requests, then the name; a request without a name
    is ``—``), ``ROWS`` of them, the rest summed as ``others (n)``.  Sessions are whatever clients
    send, so at most ``KEEP`` names are kept: past that the smallest is folded into "others" for good.
    """

    ROWS = 8
    KEEP = 1000
    HEADER = ("req", "cost $", "prompt", "compl.", "cached")

    def __init__(self, field: str) -> None:
        self.field = field
        #: name (None: none) -> [requests, prompt, completion, cached, micro-dollars, priced]
        self.names: dict[str | None, list[int]] = {}
        self.folded: list[int] | None = None
        self.folded_names = 0

    @staticmethod
    def rank(item: tuple[str | None, list[int]]) -> tuple[int, int, tuple[int, str]]:
        name, g = item
        return -g[4], -g[0], (0, "") if name is None else (1, name)

    def add(self, ev: dict[str, Any]) -> None:
        value = ev.get(self.field)
        name = None if value is None or value == "" else str(value)
        g = self.names.setdefault(name, [0, 0, 0, 0, 0, 0])
        usage = ev.get("usage") or {}
        g[0] += 1
        g[1] += int(usage.get("input_tokens") or 0)
        g[2] += int(usage.get("output_tokens") or 0)
        g[3] += int(usage.get("cached_input_tokens") or 0)
        micros = cost_micros(ev)
        if micros is not None:
            g[4] += micros
            g[5] = 1
        if len(self.names) > self.KEEP:  # after the sums: what is folded keeps this request
            worst = max(self.names.items(), key=self.rank)
            del self.names[worst[0]]
            self.folded = self._sum([self.folded, worst[1]] if self.folded else [worst[1]])
            self.folded_names += 1

    @staticmethod
    def _sum(groups: list[list[int]]) -> list[int]:
        return [*(sum(g[i] for g in groups) for i in range(5)), max(g[5] for g in groups)]

    def rows(self) -> list[tuple[str, ...]]:
        ranked = sorted(self.names.items(), key=self.rank)

        def line(label: str, g: list[int]) -> tuple[str, ...]:
            return (label, str(g[0]), usd(g[4]) if g[5] else "", *(str(v) for v in g[1:4]))

        out = [line("—" if name is None else name, g) for name, g in ranked[:self.ROWS]]
        rest = [g for _, g in ranked[self.ROWS:]] + ([self.folded] if self.folded else [])
        if rest:
            out.append(line(f"others ({len(ranked[self.ROWS:]) + self.folded_names})", self._sum(rest)))
        return out


class Figures:
    """Running figures from ``complete`` events."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.order: deque[str] = deque()
        #: the last LATENCIES durations per provider: its p50 and p95 are of those
        self.by_provider: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCIES))
        self.requests: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.by_tag: dict[str, int] = defaultdict(int)
        self.by_key = Spend("key_name")
        self.by_session = Spend("session")

    def add(self, ev: dict[str, Any]) -> bool:
        if ev.get("type") != "complete" or ev.get("id") in self.seen:
            return False
        self.seen.add(ev["id"])
        self.order.append(ev["id"])
        if len(self.order) > SEEN_IDS:
            self.seen.discard(self.order.popleft())
        self.by_key.add(ev)
        self.by_session.add(ev)
        key = ev.get("provider") or "none"
        self.by_provider[key].append(float(ev.get("duration_ms") or 0.0))
        self.requests[key] += 1
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
            out.append((key, str(self.requests[key]), str(self.errors[key]), f"{statistics.median(ordered):.0f}",
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


#: the figures' tabs: (pane id, table id, label)
FIGURE_TABS = (("tab-providers", "stats", "by provider (ms)"), ("tab-keys", "by-key", "by key"),
               ("tab-sessions", "by-session", "by session"))
#: a key's or a session's name is cut to this many characters (sessions are often 36-character UUIDs)
NAME_WIDTH = 20


class MonitorApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "fastroute"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("i", "focus_chat", "chat"),
        Binding("f", "next_figures", "figures"),
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
        with TabbedContent(id="figures") as figures:
            figures.border_title = "figures (f: next tab)"
            for pane, table, label in FIGURE_TABS:
                with TabPane(label, id=pane):
                    yield DataTable(id=table, cursor_type="none", zebra_stripes=True)
        with Vertical(id="chat-pane") as pane:
            pane.border_title = chat_title(self.model)
            yield RichLog(id="chat-log", wrap=True, markup=False)
            yield Static("", id="chat-reply", markup=False)
            yield Input(placeholder="Enter sends · Esc leaves · :model NAME", id="chat-input")
        yield Static(one_line(self.status_text), id="status", markup=False)

    def on_mount(self) -> None:
        for table_id, name, numbers in (("#stats", "provider", ("req", "err", "p50", "p95", "tokens")),
                                        ("#by-key", "key", Spend.HEADER), ("#by-session", "session", Spend.HEADER)):
            self.query_one(table_id, DataTable).add_columns(name, *(Text(n, justify="right") for n in numbers))
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
            self.fill("#stats", self.figures.rows())
            self.fill("#by-key", self.figures.by_key.rows(), NAME_WIDTH)
            self.fill("#by-session", self.figures.by_session.rows(), NAME_WIDTH)

    def fill(self, table_id: str, rows: list[tuple[str, ...]], name_width: int | None = None) -> None:
        table = self.query_one(table_id, DataTable)
        table.clear()
        for name, *cells in rows:
            name = one_line(name)
            if name_width is not None and len(name) > name_width:
                name = name[:name_width - 1] + "…"
            # a str cell would be read as markup; numbers to the right
            table.add_row(Text(name), *(Text(one_line(c), justify="right") for c in cells))

    # keys ---------------------------------------------------------------

    def action_focus_chat(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def action_next_figures(self) -> None:
        tabs = self.query_one("#figures", TabbedContent)
        panes = [pane for pane, _, _ in FIGURE_TABS]
        tabs.active = panes[(panes.index(tabs.active) + 1) % len(panes)]

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
            async with (httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=300.0), trust_env=False) as client,
                        client.stream("POST", f"{self.url}/v1/chat/completions", json=body,
                                      headers=headers) as resp):
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
