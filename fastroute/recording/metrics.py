"""Prometheus metrics for ``GET /metrics`` (prometheus-client).

With several workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by the runner) makes
every worker's counters add up in whichever worker answers the scrape.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry  # multiprocess: values live in the shared files
        labels = ("provider", "model")
        self.requests = Counter("fastroute_requests_total", "Requests answered", (*labels, "status"), registry=reg)
        self.duration = Histogram("fastroute_request_duration_seconds", "Time to the end of the answer", labels,
                                  buckets=_LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram("fastroute_time_to_first_token_seconds", "Time to the first byte of a stream", labels,
                              buckets=_LATENCY_BUCKETS, registry=reg)
        self.tokens = Counter("fastroute_tokens_total", "Tokens in and out", (*labels, "direction"), registry=reg)
        self.in_flight = Gauge("fastroute_in_flight_requests", "Requests being answered", registry=reg,
                               multiprocess_mode="livesum")
        self.upstream_errors = Counter("fastroute_upstream_errors_total", "Failed upstream attempts",
                                       ("provider", "status"), registry=reg)
        self.failovers = Counter("fastroute_failovers_total", "Requests answered by a later provider of the chain",
                                 labels, registry=reg)
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)

    def observe(self, entry: dict[str, Any]) -> None:
        """Count one finished request (a ``complete`` record)."""
        provider, model = entry.get("provider") or "none", entry.get("sent_model") or entry.get("requested_model") or ""
        self.requests.labels(provider, model, str(entry.get("status", 0))).inc()
        if entry.get("duration_ms") is not None:
            self.duration.labels(provider, model).observe(entry["duration_ms"] / 1000.0)
        if entry.get("ttft_ms") is not None:
            self.ttft.labels(provider, model).observe(entry["ttft_ms"] / 1000.0)
        usage = entry.get("usage") or {}
        if usage:
            self.tokens.labels(provider, model, "in").inc(usage.get("input_tokens", 0))
            self.tokens.labels(provider, model, "out").inc(usage.get("output_tokens", 0))
        attempts = entry.get("attempts") or []
        for a in attempts:
            if a.get("error"):
                self.upstream_errors.labels(a.get("provider") or "none", str(a.get("status") or "")).inc()
        if len(attempts) > 1 and entry.get("status") == 200:
            self.failovers.labels(provider, model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
