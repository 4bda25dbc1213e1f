"""What a key's holder may ask about their own key: ``GET /v1/usage`` (requests, tokens and cost
from the audit log, by model, day or session) and ``GET /v1/budget`` (the budget, what is spent
of it in this period, and where the rate limits stand).  Authenticated by the client key itself,
in the OpenAI dialect's error shape; no key is required where none is configured, and then
there is nothing counted per key (404)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
from blacksheep import Content, Request, Response

from fastroute.audit import AuditLog
from fastroute.errors import BadRequest, NotFound, RequestError
from fastroute.formats import openai as dialect
from fastroute.governance.counters import WINDOW_MS
from fastroute.governance.keys import Key
from fastroute.governance.limiter import Limiter, period_of
from fastroute.server.admin import _Query

JSON = b"application/json"
#: the groups a holder may sum by (their own key is the only key)
GROUPS = ("model", "day", "session")


class KeyHolderAPI:
    def __init__(self, handlers: Any, audit: AuditLog | None, limiter: Limiter | None) -> None:
        self.handlers = handlers
        self.audit = audit
        self.limiter = limiter

    async def usage(self, request: Request) -> Response:
        """``GET /v1/usage?since=&until=&group_by=model|day|session``."""
        return await self._answer(request, self._usage)

    async def budget(self, request: Request) -> Response:
        """``GET /v1/budget``."""
        return await self._answer(request, self._budget)

    async def _answer(self, request: Request, action: Any) -> Response:
        try:
            _, key = await self.handlers.caller(request)
            if key is None:
                raise NotFound("no client keys are configured here, so nothing is counted per key")
            payload = await action(request, key)
        except RequestError as err:
            return Response(err.http_status, None, Content(JSON, dialect.error_body(err)))
        return Response(200, None, Content(JSON, orjson.dumps(payload)))

    async def _usage(self, request: Request, key: Key) -> Any:
        if self.audit is None:
            raise NotFound("the audit log is off ([audit] enabled = false), so no usage is kept")
        q = _Query(request)
        group_by = q.text("group_by") or "model"
        if group_by not in GROUPS:
            raise BadRequest(f"'group_by' must be one of {', '.join(GROUPS)}, got {group_by!r}", param="group_by")
        rows = await self.audit.usage(since=q.time("since"), until=q.time("until"), group_by=group_by, key=key.name)
        return {"object": "list", "key": key.name, "group_by": group_by, "data": rows}

    async def _budget(self, request: Request, key: Key) -> Any:
        limits = key.limits
        k = key.config
        answer: dict[str, Any] = {"object": "budget", "key": key.name, "budget": None, "rate_limit": None}
        if limits is None or self.limiter is None or k is None:
            return answer
        now_ms = datetime.now(UTC).timestamp() * 1000
        counts = await self.limiter.peek(key.name, limits, now_ms / 1000)
        _, prev_requests, requests, prev_tokens, tokens, spent = counts
        if k.budget is not None:
            start, end, _ = period_of(k.budget.period, int(now_ms))
            budget = limits.budget_micros or 0
            answer["budget"] = {
                "usd": k.budget.usd, "period": k.budget.period, "spent_usd": spent / 1e6,
                "remaining_usd": max(0, budget - spent) / 1e6,
                "period_start": _iso(start) if end else None, "period_end": _iso(end) if end else None,
            }
        if k.rate_limit is not None:
            weight = (WINDOW_MS - 1 - int(now_ms) % WINDOW_MS) / WINDOW_MS
            answer["rate_limit"] = {
                "requests_per_minute": k.rate_limit.requests_per_minute,
                "tokens_per_minute": k.rate_limit.tokens_per_minute,
                # the sliding window's estimate, as the limiter judges the next request
                "requests_in_window": math.ceil(prev_requests * weight + requests),
                "tokens_in_window": math.ceil(prev_tokens * weight + tokens),
            }
        return answer


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
