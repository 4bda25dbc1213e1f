"""What ``[telemetry] enabled = true`` adds to a request's CPU: ``Pipeline.dispatch`` with telemetry off
(``Pipeline.telemetry is None``) and on (a server span, ``provider.send``, one ``provider.http``, the
GenAI attributes, the four ``router.*`` instruments, the ``traceparent`` put into the upstream request),
in the same run.

    pytest benchmarks/test_bench_telemetry.py --benchmark-group-by=group

The harness is ``stage-dispatch``'s (test_bench_pipeline.py): the real provider, router, health and
recorder, an upstream client answering from memory; **one round is 100 dispatches**.  On, spans go
through the real ``BatchSpanProcessor`` to the SDK's in-memory exporter (its thread does next to
nothing), metrics to an ``InMemoryMetricReader`` (collected once, at the end): what is measured is
the request path, not OTLP's encoding and sending, which run on the exporters' threads.  The
summary prints µs per request off, on, and the difference.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_bench_pipeline import ANSWER, COSTS, SIZES, InProcess, _config, _metrics, dispatches, up_key  # noqa: F401 (a fixture)

from fastroute.pipeline import Answer, Pipeline
from fastroute.pricing import Pricing
from fastroute.providers import build_providers
from fastroute.recording.events import EventBus
from fastroute.recording.recorder import Recorder
from fastroute.routing import Router
from fastroute.routing.health import Health


def _summary(f: dict[str, float]) -> list[str]:
    lines = ["", "telemetry on the request path (medians, µs of CPU per dispatch, in process):"]
    for size in SIZES:
        off, on = f.get(f"off {size}"), f.get(f"on {size}")
        if off is not None and on is not None:
            lines.append(f"  {size:<6} off {off:7.1f}   on {on:7.1f}   added {on - off:+6.1f} ({on / off:.2f}x)")
    return lines


@pytest.mark.parametrize("telemetry", ["off", "on"])
@pytest.mark.parametrize("size", SIZES)
def test_dispatch_telemetry(benchmark, telemetry: str, size: str, loop: asyncio.AbstractEventLoop,  # type: ignore[no-untyped-def]
                            up_key: str, figures: dict[str, float]) -> None:
    cfg = _config(classify=False)
    client = InProcess(ANSWER[size])
    providers = build_providers(cfg, client)  # type: ignore[arg-type]
    health = Health(cfg.failover)
    recorder = Recorder(EventBus(), _metrics(cfg, providers), None, Pricing(providers=COSTS, table={}))
    tel: Any = None
    spans: Any = None
    reader: Any = None
    if telemetry == "on":
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from fastroute.telemetry.otel import Telemetry

        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tel = Telemetry(cfg.telemetry, {p.name: p.format for p in cfg.providers}, spans, reader)
        tel.metrics, recorder.telemetry = recorder.metrics, tel  # type: ignore[union-attr]
        for provider in providers.values():
            provider.trace_headers = tel.inject
    pipeline = Pipeline(cfg, providers, Router(cfg, providers, health.available, steady=health.steady),
                        health, recorder, telemetry=tel)
    headers: list[dict[str, str]] = []
    post = client.post

    async def recorded(url: str, h: dict[str, str], body: bytes, timeouts: Any) -> Any:
        if not headers:
            headers.append(dict(h))
        return await post(url, h, body, timeouts)

    client.post = recorded  # type: ignore[method-assign]
    benchmark.group = f"telemetry-dispatch-{size}"
    answer, _, us = dispatches(benchmark, loop, pipeline, size)
    assert isinstance(answer, Answer) and answer.status == 200 and pipeline.in_flight == 0
    if us is not None:
        figures[f"{telemetry} {size}"] = us
    if tel is None:
        assert "traceparent" not in headers[0]
        return
    tel.tracer_provider.force_flush()
    names = {s.name for s in spans.get_finished_spans()}
    assert names == {"dispatch", "provider.send", "provider.http"}, names
    assert "traceparent" in headers[0]
    counted = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert {"router.requests", "router.request.duration_ms", "router.tokens.input"} <= counted
    tel.shutdown()
