"""The worker's OpenTelemetry: a tracer and a meter of their own (never the global ones), exporting
over OTLP/HTTP off the request path.

Spans go through a ``BatchSpanProcessor`` (its thread exports), sampled by
``ParentBased(TraceIdRatioBased(sample_ratio))``; metrics through a ``PeriodicExportingMetricReader``.
The standard variables tune both (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_METRIC_EXPORT_INTERVAL`` ...).
A receiver that does not answer costs the requests nothing: the exporters' own complaints are
silenced and one warning says so, once.  :meth:`Telemetry.shutdown` exports what is left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fastroute import __version__
from fastroute.config import TelemetryConfig
from fastroute.telemetry.spans import Trace, exchange_attributes, metric_attributes

log = logging.getLogger("fastroute")

#: the loggers of the OTLP exporters and their HTTP client: their retries and failures are said once, by us
EXPORTER_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk.trace.export", "opentelemetry.sdk.metrics")


class Unreachable:
    """Says once that the receiver does not take what is exported (``warned``: it was said)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.warned = False
        self._lock = threading.Lock()

    def failed(self, what: str) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning("telemetry: the OTLP receiver at %s did not take the %s; what cannot be exported is dropped, "
                    "requests are not affected (said once)", self.endpoint, what)


class SpanExporterOnce(OTLPSpanExporter):
    def __init__(self, unreachable: Unreachable, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unreachable = unreachable

    def export(self, spans: Any) -> SpanExportResult:
        try:
            result = super().export(spans)
        except Exception:  # never let the batch thread's logging spam the console either
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.unreachable.failed("spans")
        return result


class MetricExporterOnce(OTLPMetricExporter):
    def __init__(self, unreachable: Unreachable, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unreachable = unreachable

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.unreachable.failed("metrics")
        return result


class Telemetry:
    """One worker's tracer, meter and instruments; :meth:`begin` starts a request's :class:`Trace`,
    :meth:`complete` (the recorder, at the exchange's one end) ends it and counts it."""

    def __init__(self, config: TelemetryConfig, provider_formats: Mapping[str, str],
                 span_exporter: SpanExporter | None = None, metric_reader: Any = None) -> None:
        """``span_exporter`` and ``metric_reader``: where spans and metrics go instead of OTLP (benchmarks)."""
        for name in EXPORTER_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        base = config.otlp_endpoint.rstrip("/")
        self.unreachable = Unreachable(base)
        resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        self.tracer_provider = TracerProvider(resource=resource,
                                              sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exporter or SpanExporterOnce(self.unreachable, endpoint=f"{base}/v1/traces")))
        self.reader = metric_reader or PeriodicExportingMetricReader(
            MetricExporterOnce(self.unreachable, endpoint=f"{base}/v1/metrics"))
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("fastroute", __version__)
        meter = self.meter_provider.get_meter("fastroute", __version__)
        #: the counters' sums per (provider, model, error): [requests, input tokens, output tokens], and
        #: their attributes; read by the reader at export time (observable counters: a request adds to a
        #: list, ~1 µs, where a synchronous counter's add costs the SDK ~20 µs here)
        self._sums: dict[tuple[str, str, bool], list[int]] = {}
        self._labels: dict[tuple[str, str, bool], dict[str, Any]] = {}
        self._sums_lock = threading.Lock()
        meter.create_observable_counter("router.requests", [self._observe(0)], "{request}", "Requests handled")
        self.duration = meter.create_histogram("router.request.duration_ms", "ms", "End-to-end duration of a request")
        meter.create_observable_counter("router.tokens.input", [self._observe(1)], "{token}", "Input tokens")
        meter.create_observable_counter("router.tokens.output", [self._observe(2)], "{token}", "Output tokens")
        self.propagator = TraceContextTextMapPropagator()
        #: each provider's format (its gen_ai.provider.name): openai, anthropic, ollama, echo
        self.formats = dict(provider_formats)
        #: the worker's ``recording.metrics.Metrics``: its ``names`` (the routing table's, renewed by each
        #: reload) are the provider and model names a metric may carry; None: any
        self.metrics: Any = None

    # a request --------------------------------------------------------------

    def begin(self, ex: Any, client_headers: Mapping[str, str] | None, start_time: int | None = None) -> Trace:
        """The request's server span, continuing the client's ``traceparent`` when it sent one."""
        parent = self.propagator.extract(client_headers) if client_headers and "traceparent" in client_headers else None
        span = self.tracer.start_span("dispatch", parent, SpanKind.SERVER,
                                      {"fastroute.request_id": ex.id, "fastroute.dialect": ex.dialect,
                                       "gen_ai.operation.name": "chat"}, start_time=start_time)
        return Trace(self, span)

    def complete(self, ex: Any, entry: Mapping[str, Any]) -> None:
        """The exchange's end: its spans ended with what the log says of it, and its metrics counted.
        An exchange refused before it was dispatched (a bad key, a bad body) gets its span here."""
        trace = getattr(ex, "trace", None)
        if trace is None:
            trace = self.begin(ex, None, start_time=int(ex.ts_ms) * 1_000_000)
        attributes = exchange_attributes(ex, entry, self.formats.get(ex.provider or "", ""))
        trace.end(ex, attributes)
        labels = metric_attributes(ex, self.metrics.names if self.metrics is not None else None)
        key = (labels["provider"], labels["model"], labels["error"])
        usage = ex.usage
        counted = usage is not None and ex.error is None
        with self._sums_lock:  # the reader's thread reads them
            sums = self._sums.get(key)
            if sums is None:
                sums = self._sums[key] = [0, 0, 0]
                self._labels[key] = labels
            sums[0] += 1
            if counted:
                sums[1] += usage.input_tokens
                sums[2] += usage.output_tokens
        self.duration.record(ex.duration_ms or 0.0, self._labels[key])

    def _observe(self, index: int) -> Any:
        """The callback of one observable counter: each attribute set's sum so far."""
        def observe(options: CallbackOptions) -> list[Observation]:
            with self._sums_lock:
                return [Observation(sums[index], self._labels[key]) for key, sums in self._sums.items()
                        if sums[index] or index == 0]
        return observe

    # the upstream call --------------------------------------------------------

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """``traceparent`` (and ``tracestate``) of the current span into an upstream request's headers
        (``Provider.trace_headers``); nothing when no span is current."""
        self.propagator.inject(headers)

    def attach(self, span: Any) -> object:
        return otel_context.attach(set_span_in_context(span))

    def detach(self, token: object) -> None:
        otel_context.detach(token)

    # the end -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Export what is left and stop the exporters (blocking: run it off the loop)."""
        try:
            self.tracer_provider.shutdown()
        finally:
            self.meter_provider.shutdown()
