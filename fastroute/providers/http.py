"""Providers reached over HTTP in one provider dialect (``formats/<name>.py``).

Same dialect as the client: :meth:`post_raw` / :meth:`stream_raw` move bytes.
Another dialect: :meth:`send` / :meth:`open_stream` translate through the
canonical model with the dialect's ``render_request``, ``parse_response`` and
``StreamDecoder``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

import orjson

from fastroute.canonical import ChatRequest, ChatResponse, StreamEvent
from fastroute.errors import UpstreamError, UpstreamProtocolError
from fastroute.formats.shape import ShapeError
from fastroute.providers.base import EventStream, Provider
from fastroute.providers.transport import Reply, StreamReply

_JSON = "application/json"


class HTTPProvider(Provider):
    #: the module of formats/ this provider speaks
    dialect: ModuleType

    def __init__(self, config, client) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, client)
        self.passthrough_dialect = self.dialect.NAME
        self.url = self.endpoint(config.base_url.rstrip("/"))

    def endpoint(self, base: str) -> str:
        raise NotImplementedError

    def auth_headers(self, key: str) -> dict[str, str]:
        """How this provider carries a key (``x-api-key`` for Anthropic)."""
        return {"authorization": f"Bearer {key}"}

    def own_auth_headers(self) -> dict[str, str]:
        """This provider's configured key, carried as its chat calls carry it, for calls no client
        made (model discovery); none when no key is set."""
        key = self.api_key()
        return self.auth_headers(key) if key else {}

    def url_for(self, client_headers: Mapping[str, str] | None) -> str:
        """The endpoint for one call (a same-dialect call may carry what the client's URL said)."""
        return self.url

    def headers(self, client_key: str | None, stream: bool, client_headers: Mapping[str, str] | None = None,
                request: ChatRequest | None = None) -> dict[str, str]:
        """Headers for one call: this provider's key (or, if it says so, the client's), never both."""
        key = client_key if self.config.forward_client_key else self.api_key()
        headers = {"content-type": _JSON, "accept": "text/event-stream" if stream else _JSON}
        if key:
            headers.update(self.auth_headers(key))
        if self.trace_headers is not None:
            self.trace_headers(headers)
        return headers

    # bytes ----------------------------------------------------------------

    async def post_raw(self, body: bytes, client_key: str | None,
                       client_headers: Mapping[str, str] | None = None, request: ChatRequest | None = None,
                       url: str | None = None) -> Reply:
        """POST a body in this provider's dialect (to ``url``, else the chat endpoint); a non-2xx
        answer raises, named for this provider."""
        headers = self.headers(client_key, False, client_headers, request)
        url = url or self.url_for(client_headers)
        try:
            reply = await self.client.post(url, headers, body, self.timeouts)
        except UpstreamError as exc:
            raise self.transport_error(exc) from exc
        if reply.status >= 300:
            if reply.status < 400:  # never followed (the transport does not); its body is not repeated
                raise self.redirect_error(reply.status, reply.headers.get("location"), url)
            raise self.status_error(reply.status, reply.body, *self.dialect.upstream_error_message(reply.body))
        return reply

    async def stream_raw(self, body: bytes, client_key: str | None,
                         client_headers: Mapping[str, str] | None = None,
                         request: ChatRequest | None = None) -> StreamReply:
        """Open a streamed call; returns once the upstream's status is known."""
        headers = self.headers(client_key, True, client_headers, request)
        url = self.url_for(client_headers)
        try:
            reply = await self.client.stream(url, headers, body, self.timeouts)
        except UpstreamError as exc:
            raise self.transport_error(exc) from exc
        if reply.status >= 300:
            if reply.status < 400:  # never followed (the transport does not); its body is not read
                await reply.aclose()
                raise self.redirect_error(reply.status, reply.headers.get("location"), url)
            try:
                data = await reply.read()
            except UpstreamError:
                data = b""
            finally:
                await reply.aclose()
            raise self.status_error(reply.status, data, *self.dialect.upstream_error_message(data))
        return reply

    # translation ----------------------------------------------------------

    async def send(self, request: ChatRequest, client_key: str | None = None) -> ChatResponse:
        body = orjson.dumps(self.dialect.render_request(request, stream=False))
        reply = await self.post_raw(body, client_key, request=request)
        try:
            return self.dialect.parse_response(reply.body)
        except ShapeError as exc:  # JSON, but not an answer of its format: say where
            raise UpstreamProtocolError(f"provider '{self.name}' answered with a body fastroute cannot read: "
                                        f"{exc.path() or 'the body'}: {exc.describe()}", provider=self.name) from exc
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise UpstreamProtocolError(f"provider '{self.name}' answered with a body fastroute cannot read: "
                                        f"{type(exc).__name__}", provider=self.name) from exc

    async def open_stream(self, request: ChatRequest, client_key: str | None = None) -> EventStream:
        """Start a streamed call (errors before the first byte raise here), then its events; the
        stream owns the reply from here on."""
        body = orjson.dumps(self.dialect.render_request(request, stream=True))
        reply = await self.stream_raw(body, client_key, request=request)
        return EventStream(self._events(reply), reply)

    async def _events(self, reply: StreamReply) -> AsyncIterator[StreamEvent]:
        decoder = self.dialect.StreamDecoder(self.name)
        try:
            async for chunk in reply.chunks():
                for event in decoder.feed(chunk):
                    yield event
            for event in decoder.flush():
                yield event
        except UpstreamError as exc:
            yield StreamEvent("error", error=self.transport_error(exc))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            # valid framing, an event of a shape the decoder cannot read ("choices": [null], ...):
            # the stream ends with an error the client sees, never silently
            yield StreamEvent("error", error=UpstreamProtocolError(
                f"provider '{self.name}' sent a stream event fastroute cannot read ({type(exc).__name__})",
                provider=self.name))
        finally:
            await reply.aclose()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url}
