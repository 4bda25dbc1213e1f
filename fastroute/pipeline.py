"""The one place the flow of a request is written.

    client dialect --check--> route --> provider --> answer in the client's dialect

Same dialect in and out: the client's body goes upstream with only the model
name changed, and the upstream's bytes come back untouched (the fast path);
usage and text are read on the side.  Otherwise the request is parsed into
the canonical model and the provider's answer rendered in the client's dialect.
Every exchange ends in :meth:`Pipeline.finish`, streamed or not, success or error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fastroute.canonical import StreamEvent, Usage
from fastroute.config import Config
from fastroute.errors import RequestError, UpstreamError, UpstreamTimeout
from fastroute.providers import Provider
from fastroute.routing import Router

log = logging.getLogger("fastroute")

JSON = b"application/json"
#: status recorded when the client went away before the end (nginx's convention)
CLIENT_CLOSED = 499
EVENT_STREAM = b"text/event-stream"


@dataclass(slots=True)
class Exchange:
    """Everything known about one request, filled in as it goes."""

    id: str
    dialect: str
    started: float
    ts_ms: int
    requested_model: str = ""
    stream: bool = False
    provider: str | None = None
    sent_model: str | None = None
    tags: list[str] = field(default_factory=list)
    status: int = 200
    error: str | None = None
    usage: Usage | None = None
    response_text: str = ""
    ttft_ms: float | None = None
    duration_ms: float | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    content_type: bytes = JSON


@dataclass(slots=True)
class StreamAnswer:
    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[bytes, bytes]]
    content_type: bytes = EVENT_STREAM


Listener = Callable[[Exchange], None]


class Pipeline:
    def __init__(self, config: Config, providers: dict[str, Provider], router: Router) -> None:
        self.config = config
        self.providers = providers
        self.router = router
        self.listeners: list[Listener] = []
        self.in_flight = 0

    # entry ----------------------------------------------------------------

    def new_exchange(self, dialect: ModuleType) -> Exchange:
        """Start an exchange; it is in flight until :meth:`finish`."""
        self.in_flight += 1
        return Exchange(id="req_" + os.urandom(8).hex(), dialect=dialect.NAME, started=time.perf_counter(),
                        ts_ms=int(time.time() * 1000))

    async def dispatch(self, dialect: ModuleType, body: Any, client_key: str | None,
                       client_headers: dict[str, str] | None = None) -> Answer | StreamAnswer:
        ex = self.new_exchange(dialect)
        try:
            model, stream = dialect.check_request(body)
            ex.requested_model, ex.stream = model, stream
            route = self.router.route(model, ex.tags)
            provider = self.providers[route.provider]
            ex.provider, ex.sent_model = provider.name, route.model
            headers = [(b"x-router-provider", provider.name.encode()), (b"x-router-model", route.model.encode()),
                       (b"x-request-id", ex.id.encode())]
            if provider.passthrough_dialect == dialect.NAME:
                upstream_body, tap = dialect.passthrough(body, route.model, stream)
                if stream:
                    reply = await provider.stream_raw(upstream_body, client_key, client_headers)
                    return StreamAnswer(200, self._relay(ex, dialect, provider, reply, tap),
                                        headers + dialect.STREAM_HEADERS, dialect.STREAM_CONTENT_TYPE)
                reply = await provider.post_raw(upstream_body, client_key, client_headers)
                ex.usage = dialect.usage_from_body(reply.body)
                self.finish(ex)
                return Answer(200, reply.body, headers)
            request = dialect.parse_request(body)
            request.model = route.model
            if stream:
                events = await provider.open_stream(request, client_key)
                return StreamAnswer(200, self._render(ex, dialect, request, events),
                                    headers + dialect.STREAM_HEADERS, dialect.STREAM_CONTENT_TYPE)
            response = await provider.send(request, client_key)
            if response.usage.total_tokens == 0:
                response.usage = estimate_usage(request, response.text())
            ex.usage, ex.response_text = response.usage, response.text()
            self.finish(ex)
            return Answer(200, dialect.render_response(response), headers)
        except RequestError as err:
            return self.fail(ex, dialect, err)
        except Exception as exc:  # a bug: answer honestly, log it, keep serving
            log.exception("request %s failed inside fastroute", ex.id)
            return self.fail(ex, dialect, RequestError(f"internal error in fastroute: {type(exc).__name__}"))

    def fail(self, ex: Exchange, dialect: ModuleType, err: RequestError) -> Answer:
        ex.status, ex.error = err.http_status, err.message
        self.finish(ex)
        return Answer(err.http_status, dialect.error_body(err), [(b"x-request-id", ex.id.encode())])

    def finish(self, ex: Exchange) -> None:
        """The one exit of every exchange."""
        self.in_flight -= 1
        ex.duration_ms = ex.elapsed_ms()
        for listener in self.listeners:
            try:
                listener(ex)
            except Exception:
                log.exception("listener failed for %s", ex.id)

    # streams --------------------------------------------------------------

    async def _relay(self, ex: Exchange, dialect: ModuleType, provider: Provider, reply: Any,
                     tap: Any) -> AsyncIterator[bytes]:
        """Forward the upstream's chunks the moment they arrive; read them on the side."""
        held = b""  # the start of an event whose end has not arrived yet
        try:
            async for chunk in reply.chunks():
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if held:
                    chunk, held = held + chunk, b""
                if not chunk.endswith(dialect.STREAM_END):
                    # Forward whole events only: a client can do nothing with half of one, and
                    # if the upstream dies mid-event the client must see an error, not broken JSON.
                    cut = dialect.stream_boundary(chunk)
                    chunk, held = chunk[:cut], chunk[cut:]
                    if not chunk:
                        continue
                out = tap.forward(chunk)
                if out:
                    yield out
                tap.feed(chunk)  # accounting, after the client has the bytes
            if held:  # the upstream ended cleanly on an unterminated event: it is the upstream's to give
                yield held
                tap.feed(held)
        except (UpstreamError, UpstreamTimeout) as exc:
            err = provider.transport_error(exc)
            ex.status, ex.error = err.http_status, err.message
            yield dialect.render_stream_error(err)
        except (asyncio.CancelledError, GeneratorExit):
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        finally:
            await reply.aclose()
            ex.usage, ex.response_text = tap.usage, tap.text
            if ex.error is None and tap.error is not None:
                ex.error = tap.error
            self.finish(ex)

    async def _render(self, ex: Exchange, dialect: ModuleType, request: Any, events: Any) -> AsyncIterator[bytes]:
        """Render canonical stream events in the client's dialect; usage always ends the stream."""
        renderer = dialect.StreamRenderer()
        text: list[str] = []
        try:
            async for ev in events:
                if ex.ttft_ms is None:
                    ex.ttft_ms = ex.elapsed_ms()
                if ev.kind == "text":
                    text.append(ev.text)
                elif ev.kind == "usage":
                    ex.usage = ev.usage
                elif ev.kind == "error":
                    ex.status, ex.error = ev.error.http_status, ev.error.message
                    yield renderer.render(ev)
                    return  # an error ends the stream: no clean ending after it
                out = renderer.render(ev)
                if out:  # an empty chunk would end the response
                    yield out
            if ex.usage is None:  # the upstream gave none: count it, and say so
                ex.usage = estimate_usage(request, "".join(text))
                out = renderer.render(StreamEvent("usage", usage=ex.usage))
                if out:
                    yield out
            yield renderer.end()
        except RequestError as err:
            ex.status, ex.error = err.http_status, err.message
            yield dialect.render_stream_error(err)
        except (asyncio.CancelledError, GeneratorExit):
            ex.status, ex.error = CLIENT_CLOSED, "client disconnected"
            raise
        finally:
            await events.aclose()
            ex.response_text = "".join(text)
            self.finish(ex)


def estimate_usage(request: Any, output: str) -> Usage:
    """A rough count (four characters a token) for upstreams that report none, marked as estimated."""
    chars = len(request.system or "")
    for m in request.messages:
        chars += sum(len(p.text) for p in m.content if hasattr(p, "text") and isinstance(p.text, str))
        chars += sum(len(c.arguments) + len(c.name) for c in m.tool_calls)
    return Usage(input_tokens=max(1, chars // 4), output_tokens=max(1, len(output) // 4) if output else 0,
                 estimated=True)
