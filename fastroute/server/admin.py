"""The admin API: ``GET /v1/admin/logs`` and ``GET /v1/admin/usage`` from the audit log
(:mod:`fastroute.audit`), the keys (:mod:`.admin_keys`), and ``POST /v1/admin/reload``
(:mod:`.reload`).  On when ``[admin] token_env`` names a set variable; the token is
compared in constant time and is not a client key (a client key is refused here, and the admin
token is refused on the inference endpoints unless it is also a configured key)."""

from __future__ import annotations

import dataclasses
import hmac
import os
from typing import Any

import orjson
from blacksheep import Content, Request, Response

from fastroute.audit import MAX_LIMIT, AuditLog
from fastroute.config import Config
from fastroute.errors import BadRequest, NotFound, RequestError, Unauthorized
from fastroute.formats import openai as dialect
from fastroute.governance.keys import client_key, presented_bytes
from fastroute.server.admin_keys import AdminKeys

JSON = b"application/json"
GROUPS = ("key", "model", "day", "session")


class AdminAPI:
    def __init__(self, config: Config, audit: AuditLog | None, keys: AdminKeys, handlers: Any,
                 reloader: Any = None) -> None:
        env = config.admin.token_env
        token = os.environ.get(env) if env else None
        self._token = token.encode("utf-8", "surrogateescape") if token else None
        self.audit = audit
        self.keys = keys
        #: the server's Handlers: the body read within its limits, a refused body drained
        self.handlers = handlers
        #: the worker's reloads (fastroute.server.reload.Reloader)
        self.reloader = reloader

    async def create_key(self, request: Request) -> Response:
        """``POST /v1/admin/keys``: 201 with the key, its secret shown this once."""
        return await self._answer(request, self._create_key)

    async def list_keys(self, request: Request) -> Response:
        return await self._answer(request, lambda r: self.keys.list())

    async def get_key(self, request: Request) -> Response:
        return await self._answer(request, lambda r: self.keys.get(_name(r)))

    async def update_key(self, request: Request) -> Response:
        return await self._answer(request, self._update_key)

    async def delete_key(self, request: Request) -> Response:
        return await self._answer(request, lambda r: self.keys.delete(_name(r)))

    async def reload(self, request: Request) -> Response:
        """``POST /v1/admin/reload``: the config file read again, validated, and served by every worker;
        400 naming the key path when it has a mistake (the running config stays)."""
        return await self._answer(request, self._reload)

    async def _reload(self, request: Request) -> Any:
        await self.handlers.drop_body(request)  # no body is expected; one sent is not left unread
        if self.reloader is None:
            raise NotFound("this server cannot reload its config")
        return await self.reloader.reload()

    async def _create_key(self, request: Request) -> Any:
        return await self.keys.create(await self.handlers.read_json(request))

    async def _update_key(self, request: Request) -> Any:
        return await self.keys.update(_name(request), await self.handlers.read_json(request))

    async def logs(self, request: Request) -> Response:
        """crabllm's query: ``key``, ``model``, ``session``, ``since``, ``until`` (ms, or ISO 8601 UTC),
        ``limit`` (1-1000, default 100); newest first."""
        return await self._answer(request, self._logs)

    async def usage(self, request: Request) -> Response:
        """Requests, tokens and cost per ``group_by`` (key, model, day, session) over ``since`` .. ``until``."""
        return await self._answer(request, self._usage)

    async def _answer(self, request: Request, action: Any) -> Response:
        try:
            self._check(request)
        except RequestError as err:
            await self.handlers.drop_body(request)
            return Response(err.http_status, None, Content(JSON, dialect.error_body(err)))
        try:
            payload = await action(request)
        except RequestError as err:
            return Response(err.http_status, None, Content(JSON, dialect.error_body(err)))
        status, payload = payload if isinstance(payload, tuple) else (200, payload)
        return Response(status, None, Content(JSON, orjson.dumps(payload)))

    def _check(self, request: Request) -> None:
        if self._token is None:
            raise NotFound("the admin API is off: set [admin] token_env to a variable holding a token")
        if not self.is_admin(request):
            raise Unauthorized("missing or invalid admin token")

    def is_admin(self, request: Request) -> bool:
        """Does the request carry the admin token (compared in constant time)?"""
        if self._token is None:
            return False
        presented = client_key(request)
        return presented is not None and hmac.compare_digest(presented_bytes(presented), self._token)

    def _audit(self) -> AuditLog:
        if self.audit is None:
            raise NotFound("the audit log is off ([audit] enabled = false)")
        return self.audit

    async def _logs(self, request: Request) -> Any:
        q = _Query(request)
        records = await self._audit().logs(key=q.text("key"), model=q.text("model"), since=q.time("since"),
                                        until=q.time("until"), limit=q.limit(), session=q.text("session"))
        return {"object": "list", "data": [dataclasses.asdict(r) for r in records]}

    async def _usage(self, request: Request) -> Any:
        q = _Query(request)
        group_by = q.text("group_by") or "key"
        if group_by not in GROUPS:
            raise BadRequest(f"'group_by' must be one of {', '.join(GROUPS)}, got {group_by!r}", param="group_by")
        rows = await self._audit().usage(since=q.time("since"), until=q.time("until"), group_by=group_by,
                                      key=q.text("key"))
        return {"object": "list", "group_by": group_by, "data": rows}


def _name(request: Request) -> str:
    return request.route_values.get("name", "")


class _Query:
    def __init__(self, request: Request) -> None:
        self.query = request.query

    def text(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values and values[0] != "" else None

    def time(self, name: str) -> int | None:
        """Milliseconds since the epoch: a number, or an ISO 8601 date or time (UTC unless it says)."""
        value = self.text(name)
        if value is None:
            return None
        if value.isdigit():
            return int(value)
        from datetime import datetime, timezone

        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"'{name}' must be milliseconds since the epoch or an ISO 8601 time, got {value!r}",
                             param=name) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp() * 1000)

    def limit(self) -> int:
        value = self.text("limit")
        if value is None:
            return 100
        if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
            raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, got {value!r}", param="limit")
        return int(value)
