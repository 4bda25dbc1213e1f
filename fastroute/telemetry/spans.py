"""One request's spans, and the attributes they and the metrics carry.

    dispatch | dispatch_stream       SERVER, the whole exchange, from the client's traceparent if any
      provider.send                  the provider call, failover included (from the first attempt on)
        provider.http                CLIENT, one per attempt; its context is what the upstream receives
      dispatch_stream.body           a stream's delivery to the client, to its one end

Attributes follow the OpenTelemetry GenAI conventions (``gen_ai.*``), ``error.type`` on failures, and
fastroute's own (``fastroute.*``).  Never a key, a header or the request's text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

if TYPE_CHECKING:
    from fastroute.telemetry.otel import Telemetry

T = TypeVar("T")

#: ``error.type`` of an exchange by its status (the statuses fastroute answers with, errors.py)
ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               413: "payload_too_large", 429: "rate_limited", 431: "headers_too_large", 499: "client_closed",
               500: "internal_error", 502: "upstream_error", 504: "upstream_timeout"}
#: ``error.type`` of an exchange answered 200 whose stream still went wrong (an event nobody can read ...)
STREAM_ERROR = "stream_error"


class Trace:
    """The spans of one exchange (``Exchange.trace``); :meth:`end` ends whatever is still open."""

    __slots__ = ("tel", "server", "send", "body", "attempts")

    def __init__(self, tel: Telemetry, server: Any) -> None:
        self.tel = tel
        self.server = server
        self.send: Any = None
        self.body: Any = None
        self.attempts = 0

    async def attempt(self, reaching: Awaitable[T], provider: str, model: str) -> T:
        """``provider.http`` around one attempt at one provider (``Pipeline._reach``), the current span
        while it runs: the upstream request carries its ``traceparent``.  The first attempt opens
        ``provider.send``; the one that answers closes it."""
        tel = self.tel
        if self.send is None:
            self.send = tel.tracer.start_span("provider.send", set_span_in_context(self.server))
        self.attempts += 1
        span = tel.tracer.start_span("provider.http", set_span_in_context(self.send), SpanKind.CLIENT, {
            "fastroute.provider": provider, "gen_ai.provider.name": tel.formats.get(provider, ""),
            "gen_ai.request.model": model, "gen_ai.operation.name": "chat", "fastroute.attempt": self.attempts})
        token = tel.attach(span)
        try:
            reached = await reaching
        except BaseException as exc:
            status = getattr(exc, "http_status", None)
            if status is not None:
                span.set_attribute("fastroute.status", status)
            failed(span, type(exc).__name__, getattr(exc, "message", None) or type(exc).__name__)
            raise
        finally:
            tel.detach(token)
            span.end()
        self.send.set_attribute("fastroute.attempts", self.attempts)
        self.send.end()
        self.send = None
        return reached

    def streaming(self) -> None:
        """The stream's answer is made: ``dispatch_stream.body`` runs until the exchange ends."""
        self.server.update_name("dispatch_stream")
        self.body = self.tel.tracer.start_span("dispatch_stream.body", set_span_in_context(self.server))

    def end(self, ex: Any, attributes: Mapping[str, Any]) -> None:
        error = error_type(ex)
        for span in (self.send, self.body):  # what a failure or a stream's end left open
            if span is not None:
                if error is not None:
                    failed(span, error, ex.error)
                span.end()
        self.send = self.body = None
        server = self.server
        if ex.stream:
            server.update_name("dispatch_stream")
        server.set_attributes(attributes)
        if error is not None:
            failed(server, error, ex.error)
        server.end()


def failed(span: Any, kind: str, message: str | None) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message))


def error_type(ex: Any) -> str | None:
    """The exchange's ``error.type``, None when it succeeded."""
    if ex.status >= 400:
        return ERROR_TYPES.get(ex.status, str(ex.status))
    return STREAM_ERROR if ex.error is not None else None


def exchange_attributes(ex: Any, entry: Mapping[str, Any], provider_format: str) -> dict[str, Any]:
    """The server span's attributes, from the exchange at its end (what the log line says)."""
    out: dict[str, Any] = {"gen_ai.request.model": ex.requested_model, "fastroute.stream": ex.stream,
                           "http.response.status_code": ex.status}
    if ex.provider:
        out["fastroute.provider"] = ex.provider
        if provider_format:
            out["gen_ai.provider.name"] = out["gen_ai.system"] = provider_format
    if ex.sent_model:
        out["gen_ai.response.model"] = ex.sent_model  # the model that answered, after failover
    usage = ex.usage
    if usage is not None:
        out["gen_ai.usage.input_tokens"] = usage.input_tokens
        out["gen_ai.usage.output_tokens"] = usage.output_tokens
        out["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
        out["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_tokens
        if usage.estimated:
            out["fastroute.usage.estimated"] = True
    stop = getattr(ex, "stop_reason", None)
    if stop:
        out["gen_ai.response.finish_reasons"] = (stop,)
    if ex.rule is not None:
        out["fastroute.rule"] = ex.rule
    if ex.tags:
        out["fastroute.tags"] = tuple(ex.tags)
    if ex.key_name is not None:
        out["fastroute.key_name"] = ex.key_name
    cost = entry.get("cost_usd")
    if cost is not None:
        out["fastroute.cost_usd"] = cost
    if len(ex.attempts) > 1:
        out["fastroute.attempts"] = len(ex.attempts)
    if ex.ttft_ms is not None:
        out["fastroute.ttft_ms"] = round(ex.ttft_ms, 3)
    if ex.limited_by:
        out["fastroute.limited_by"] = ex.limited_by
    return out


def metric_attributes(ex: Any, names: Any) -> dict[str, Any]:
    """The metrics' attributes (the seed's): provider, model and error; names bounded as
    ``/metrics`` bounds its labels (``names``: its ``LabelNames``; a name a client made up is ``other``)."""
    provider, model = ex.provider or "none", ex.sent_model or ex.requested_model or "none"
    if names is not None:
        provider, model = names.provider(provider), names.model(model)
    return {"provider": provider, "model": model, "error": error_type(ex) is not None}
