"""Turns an exchange's life into events, a log line and metrics."""

from __future__ import annotations

import os
import time
from typing import Any

from fastroute.audit import AuditLog, AuditRecord
from fastroute.canonical import ChatRequest, TextPart
from fastroute.pricing import Pricing
from fastroute.recording.console import ConsoleLog
from fastroute.recording.events import EventBus
from fastroute.recording.log import RequestLog
from fastroute.recording.metrics import Metrics

#: events carry at most this much of the prompt, the answer, a tool call's arguments and an error;
#: the log has it all
EVENT_TEXT_LIMIT = 2000
#: and at most this many of a message's tool calls
EVENT_TOOL_CALLS = 16
#: the last messages of the request a ``complete`` event carries
EVENT_MESSAGES = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


def _messages(request: ChatRequest | None, last: int | None = None) -> list[dict[str, Any]]:
    """The request's messages as the log holds them (``last``: only so many, from the end)."""
    if request is None:
        return []
    out = []
    for m in request.messages if last is None else request.messages[-last:]:
        item: dict[str, Any] = {"role": m.role,
                                "content": "".join(p.text for p in m.content if isinstance(p, TextPart))}
        if m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
        out.append(item)
    return out


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= EVENT_TEXT_LIMIT:
        return text
    return text[:EVENT_TEXT_LIMIT] + f"… ({len(text)} characters)"


def _event_message(m: dict[str, Any]) -> dict[str, Any]:
    """A log entry's message as an event carries it: every text clipped (the history of the feed
    holds 500 events; a tool call can carry a whole file)."""
    out = {**m, "content": _clip(m["content"])}
    calls = m.get("tool_calls")
    if calls:
        out["tool_calls"] = [{**c, "arguments": _clip(c["arguments"])} for c in calls[:EVENT_TOOL_CALLS]]
    return out


def audit_record(ex: Any, entry: dict[str, Any]) -> AuditRecord:
    u = ex.usage
    return AuditRecord(
        request_id=ex.id, timestamp=ex.ts_ms, key_name=ex.key_name, session=ex.session, model=ex.requested_model,
        provider=ex.provider, sent_model=ex.sent_model, prompt_tokens=u.input_tokens if u else 0,
        completion_tokens=u.output_tokens if u else 0, cached_tokens=u.cached_input_tokens if u else 0,
        cost_micros=entry["cost_micros"], latency_ms=entry["duration_ms"], ttft_ms=entry["ttft_ms"],
        status=ex.status, error=ex.error, stream=ex.stream, estimated=bool(u and u.estimated), cache=ex.cache)


class Recorder:
    def __init__(self, events: EventBus, metrics: Metrics | None = None, log: RequestLog | None = None,
                 pricing: Pricing | None = None, console: ConsoleLog | None = None,
                 audit: AuditLog | None = None) -> None:
        self.events = events
        self.metrics = metrics
        self.log = log
        #: the line on stdout (failures; every request with --access-log)
        self.console = console
        #: what a request cost, from its usage (None: nothing is priced)
        self.pricing = pricing
        #: one record per request for the admin API's logs and usage ([audit])
        self.audit = audit
        #: spans and OTLP metrics ([telemetry]; telemetry.otel.Telemetry), ended here; None: off
        self.telemetry: Any = None
        #: which worker process answered (with --workers N, events of all of them reach every viewer)
        self.worker = os.getpid()

    def start(self, ex: Any, in_flight: int) -> None:
        if self.metrics is not None:
            self.metrics.set_in_flight(in_flight)
        self.events.publish({"type": "start", "id": ex.id, "ts_ms": ex.ts_ms, "model": ex.requested_model,
                             "in_flight": in_flight, "dialect": ex.dialect, "stream": ex.stream,
                             "key_name": ex.key_name})

    def classified(self, ex: Any) -> None:
        self.events.publish({"type": "classified", "id": ex.id, "ts_ms": _now_ms(), "tags": list(ex.tags)})

    def routed(self, ex: Any) -> None:
        self.events.publish({"type": "routed", "id": ex.id, "ts_ms": _now_ms(), "provider": ex.provider,
                             "model": ex.sent_model, "rule": ex.rule})

    def cost_of(self, ex: Any) -> int | None:
        """What the exchange cost in micro-dollars, from its usage; None when nothing prices it."""
        if ex.usage is None or self.pricing is None:
            return 0 if ex.cache == "hit" else None  # an answer from the exact cache spent nothing
        return self.pricing.cost(ex.provider, ex.sent_model or ex.requested_model, ex.usage)

    def entry(self, ex: Any, last: int | None = None) -> dict[str, Any]:
        """The log entry: the seed's fields, plus id, usage, cost, time to first token and the attempts.
        ``last``: only that many of the messages (what an event shows, when no log is kept)."""
        usage = ex.usage.as_dict() if ex.usage is not None else None
        micros = ex.cost_micros
        request = ex.request
        return {
            "ts_ms": ex.ts_ms, "id": ex.id, "dialect": ex.dialect, "stream": ex.stream, "key_name": ex.key_name,
            "session": ex.session,
            "provider": ex.provider, "requested_model": ex.requested_model, "sent_model": ex.sent_model,
            "rule": ex.rule, "status": ex.status, "duration_ms": round(ex.duration_ms or 0.0, 3),
            "ttft_ms": round(ex.ttft_ms, 3) if ex.ttft_ms is not None else None,
            "tags": list(ex.tags), "response_tags": list(ex.response_tags), "plugins": list(ex.plugins),
            "system": request.system if request is not None else None, "messages": _messages(request, last),
            "response": ex.response_text, "error": ex.error, "limited_by": ex.limited_by,
            "usage": usage,
            "cost_micros": micros, "cost_usd": micros / 1e6 if micros is not None else None,
            "attempts": list(ex.attempts), "omitted_tools": list(ex.omitted_tools), "cache": ex.cache,
        }

    def complete(self, ex: Any, in_flight: int) -> None:
        entry = self.entry(ex, None if self.log is not None else EVENT_MESSAGES)
        if self.log is not None:
            self.log.write(entry)
        if self.console is not None:
            self.console.note(entry)
        if self.audit is not None:
            self.audit.record(audit_record(ex, entry))
        if self.metrics is not None:
            self.metrics.observe(entry)
            self.metrics.set_in_flight(in_flight)
        event = {**entry, "type": "complete", "in_flight": in_flight, "worker": self.worker, "system": _clip(entry["system"]),
                 "response": _clip(entry["response"]), "error": _clip(entry["error"]),
                 "messages": [_event_message(m) for m in entry["messages"][-EVENT_MESSAGES:]]}
        self.events.publish(event)
        if self.telemetry is not None:
            self.telemetry.complete(ex, entry)
