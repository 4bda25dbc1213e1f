"""``fastroute watch [URL]``: one line per event, as they happen.

Colour on a terminal, plain when piped, ``--json`` for the raw events.  A finished request's
line carries the client key's name (``key=alice``, when keys are configured) and its cost
(``$0.000123``, when a price is known).  What an event carries from a client or a provider
(model names, tags, errors) is shown on one line, its control characters made visible
(:mod:`fastroute.tui.text`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

import orjson

from fastroute.tui.feed import FeedRefused, events
from fastroute.tui.text import one_line

_COLOURS = {"dim": "\033[2m", "green": "\033[32m", "red": "\033[31m", "yellow": "\033[33m", "cyan": "\033[36m",
            "bold": "\033[1m", "reset": "\033[0m"}


def _clock(ts_ms: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime((ts_ms if ts_ms is not None else time.time() * 1000) / 1000))


def cost_micros(ev: dict[str, Any]) -> int | None:
    """What a ``complete`` event's request cost in micro-dollars; None when nothing priced it."""
    if ev.get("cost_micros") is not None:
        return int(ev["cost_micros"])
    if ev.get("cost_usd") is not None:
        return round(ev["cost_usd"] * 1_000_000)
    return None


def usd(micros: int) -> str:
    """Whole micro-dollars as USD with six decimals, exactly: ``123`` -> ``0.000123``."""
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    return f"{sign}{micros // 1_000_000}.{micros % 1_000_000:06d}"


def format_event(ev: dict[str, Any], colour: bool) -> str | None:
    """One line for one event (None for events without a line)."""
    c = _COLOURS if colour else dict.fromkeys(_COLOURS, "")
    kind, rid = ev.get("type"), one_line(str(ev.get("id", ""))[-8:])
    if kind == "start":
        return (f"{c['dim']}{_clock(ev.get('ts_ms'))}{c['reset']} {c['cyan']}→{c['reset']} {rid} "
                f"{one_line(ev.get('model', ''))} {c['dim']}({one_line(ev.get('dialect', ''))}"
                f"{', stream' if ev.get('stream') else ''}, in flight {ev.get('in_flight', 0)}){c['reset']}")
    if kind == "classified":
        tags = one_line(", ".join(ev.get("tags") or []) or "none")
        return f"{c['dim']}{_clock(ev.get('ts_ms'))}{c['reset']}   {rid} tags: {tags}"
    if kind == "routed":
        rule = ev.get("rule")
        how = "forced by a plugin" if rule == -1 else f"rule {one_line(rule)}"
        return (f"{c['dim']}{_clock(ev.get('ts_ms'))}{c['reset']}   {rid} routed to "
                f"{c['bold']}{one_line(ev.get('provider'))}{c['reset']} {one_line(ev.get('model'))} "
                f"{c['dim']}({how}){c['reset']}")
    if kind == "complete":
        failed = bool(ev.get("error")) or (ev.get("status") or 0) >= 400
        mark = f"{c['red']}✗" if failed else f"{c['green']}✓"
        usage = ev.get("usage") or {}
        tokens = f" tokens {usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}" if usage else ""
        ttft = f" ttft {ev['ttft_ms']:.0f}ms" if ev.get("ttft_ms") is not None else ""
        key = f" key={one_line(ev['key_name'])}" if ev.get("key_name") else ""
        micros = cost_micros(ev)
        cost = f" ${usd(micros)}" if micros is not None else ""
        tries = f" after {len(ev['attempts'])} attempts" if len(ev.get("attempts") or []) > 1 else ""
        error = f" {c['red']}{one_line(ev['error'])}{c['reset']}" if ev.get("error") else ""
        model = ev.get("sent_model") or ev.get("requested_model") or "-"
        return (f"{c['dim']}{_clock(ev.get('ts_ms'))}{c['reset']} {mark}{c['reset']} {rid} "
                f"{one_line(ev.get('provider') or '-')}/{one_line(model)} "
                f"{ev.get('status')} {ev.get('duration_ms', 0):.0f}ms{ttft}{tokens}{key}{cost}{tries}{error}")
    return None


async def watch(url: str, raw_json: bool, out: TextIO, api_key: str | None, count: int | None) -> None:
    colour = out.isatty() and not raw_json

    def status(message: str) -> None:
        print(f"# {message}", file=sys.stderr, flush=True)

    async for ev in events(url, api_key, status, stop_after=count):
        line = orjson.dumps(ev).decode() if raw_json else format_event(ev, colour)
        if line is not None:
            print(line, file=out, flush=True)


def run(url: str, raw_json: bool, api_key: str | None, count: int | None = None) -> int:
    try:
        asyncio.run(watch(url, raw_json, sys.stdout, api_key, count))
    except FeedRefused as exc:
        print(f"fastroute watch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
