"""``POST /v1/messages/count_tokens``: Anthropic's token counting, routed like ``/v1/messages``.

The body is checked and parsed by the Anthropic dialect, classified for tags, and routed by the
same rules as a chat.  Routed to an ``anthropic`` provider, it goes to that provider's own
``…/v1/messages/count_tokens`` (the routed model in it, the provider's key; ``anthropic-version``,
``anthropic-beta`` and the SDK's ``?beta=true`` as the client sent them) and its answer comes
back as it came.  Routed anywhere else, it is counted here (:mod:`fastroute.tokens`) and
``x-router-token-count`` says how.

Not an exchange of the pipeline: no plugin, log line or event (Claude Code counts all the time).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

import orjson
from blacksheep import Content, Request, Response

from fastroute.canonical import ChatRequest
from fastroute.errors import RequestError
from fastroute.formats import anthropic as dialect
from fastroute.headers import check_model_name, header_value
from fastroute.pipeline import request_needs
from fastroute.providers.anthropic import BETA_QUERY, FORWARDED, AnthropicProvider
from fastroute.routing.classifiers import request_text, run_all
from fastroute.tokens import TokenCount, TokenCounter

if TYPE_CHECKING:
    from fastroute.server.app import Handlers

log = logging.getLogger("fastroute")

JSON = b"application/json"


class CountTokens:
    """The handler, with what it needs: the app's handlers (key check, body reading, pipeline)
    and this worker's token counter."""

    def __init__(self, handlers: Handlers, counter: TokenCounter | None = None) -> None:
        self.handlers = handlers
        self.counter = counter or TokenCounter()

    async def count_tokens(self, request: Request) -> Response:
        headers = _Headers()
        try:
            return await self._answer(request, headers)
        except RequestError as err:
            return Response(err.http_status, headers.items, Content(JSON, dialect.error_body(err)))
        except Exception as exc:  # a bug: answer honestly, log it, keep serving
            log.exception("count_tokens %s failed inside fastroute", headers.request_id)
            err = RequestError(f"internal error in fastroute: {type(exc).__name__}")
            return Response(err.http_status, headers.items, Content(JSON, dialect.error_body(err)))

    async def _answer(self, request: Request, headers: _Headers) -> Response:
        handlers = self.handlers
        pipeline = handlers.pipeline
        key, caller, body = await handlers.caller_json(request)
        model = check_model_name(dialect.check_request(body)[0])
        if caller is not None:
            caller.require(model)  # what the key may not ask for, it may not count either
        body.pop("plugins", None)
        canonical = dialect.parse_request(body)
        tags = run_all(pipeline.request_classifiers, request_text(canonical))
        headers.tags = tags
        route = pipeline.router.route(model, tags, request_needs(canonical))
        headers.provider, headers.model = route.provider, route.model
        provider = pipeline.providers[route.provider]
        if isinstance(provider, AnthropicProvider):
            forwarded = {name: value.decode("latin-1") for name in FORWARDED
                         if (value := request.get_first_header(name.encode())) is not None}
            if request.query.get("beta") == ["true"]:  # the SDK's beta marker, passed on as for a chat
                forwarded[BETA_QUERY] = "true"
            upstream = orjson.dumps({**body, "model": route.model})
            reply = await provider.count_tokens_raw(upstream, key, forwarded)
            return Response(reply.status, headers.items, Content(JSON, reply.body))
        count = await self._count(canonical, route.model)
        headers.method = count.method
        return Response(200, headers.items, Content(JSON, orjson.dumps({"input_tokens": count.input_tokens})))

    async def _count(self, request: ChatRequest, model: str) -> TokenCount:
        if not self.counter.ready(model):
            await asyncio.to_thread(self.counter.prepare, model)  # once per worker: ~1 s of loading
        return self.counter.count(request, model)


class _Headers:
    """The transparency headers, filled in as the request goes."""

    __slots__ = ("request_id", "provider", "model", "tags", "method")

    def __init__(self) -> None:
        self.request_id = "req_" + os.urandom(8).hex()
        self.provider = ""
        self.model = ""
        self.tags: list[str] = []
        self.method: str | None = None

    @property
    def items(self) -> list[tuple[bytes, bytes]]:
        out = [(b"x-router-provider", header_value(self.provider)), (b"x-router-model", header_value(self.model)),
               (b"x-router-request-tags", header_value(",".join(self.tags))),
               (b"x-request-id", self.request_id.encode())]
        if self.method is not None:
            out.append((b"x-router-token-count", self.method.encode()))
        return out
