"""``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``:
what fastroute kept of a response (see :mod:`fastroute.responses_store`), in OpenAI's shapes,
behind the server's key check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from blacksheep import Content, Request, Response

from fastroute.errors import BadRequest, RequestError
from fastroute.formats import responses as dialect
from fastroute.responses_store import ResponsesStore

if TYPE_CHECKING:
    from fastroute.server.app import Handlers

JSON = b"application/json"


class ResponsesAPI:
    def __init__(self, handlers: Handlers, state: ResponsesStore) -> None:
        self.handlers = handlers
        self.state = state

    async def get(self, request: Request) -> Response:
        return await self._answer(request, self._get)

    async def delete(self, request: Request) -> Response:
        return await self._answer(request, self._delete)

    async def input_items(self, request: Request) -> Response:
        return await self._answer(request, self._input_items)

    async def _answer(self, request: Request, action: Any) -> Response:
        try:
            key = await self.handlers.check_key(request)
            payload = await action(request.route_values.get("response_id", ""), key, request)
        except RequestError as err:
            return Response(err.http_status, None, Content(JSON, dialect.error_body(err)))
        return Response(200, None, Content(JSON, orjson.dumps(payload)))

    async def _get(self, rid: str, key: str | None, request: Request) -> Any:
        return await self.state.response(rid, key)

    async def _delete(self, rid: str, key: str | None, request: Request) -> Any:
        await self.state.delete(rid, key)
        return {"id": rid, "object": "response", "deleted": True}

    async def _input_items(self, rid: str, key: str | None, request: Request) -> Any:
        """OpenAI's list: newest first unless ``order=asc``; ``limit`` (1-100, 20), ``after`` an item id."""
        items = await self.state.input_items(rid, key)
        query = request.query
        order = query.get("order", ["desc"])[0]
        if order not in ("asc", "desc"):
            raise BadRequest("'order' must be 'asc' or 'desc'", param="order")
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            raise BadRequest("'limit' must be an integer", param="limit") from None
        if not 1 <= limit <= 100:
            raise BadRequest("'limit' must be between 1 and 100", param="limit")
        ordered = items if order == "asc" else items[::-1]
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [i.get("id") for i in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = ordered[:limit]
        return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
                "last_id": page[-1].get("id") if page else None, "has_more": len(ordered) > limit}
