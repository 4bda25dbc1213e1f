"""Metrics per request, and ``/metrics`` after many model names a client made up.

``bounded`` is the server's way (only names the routing table knows become labels);
``unbounded`` labels every name as it comes, as fastroute did before, for comparison.

    pytest benchmarks/test_bench_metrics.py --benchmark-group-by=group
"""

from __future__ import annotations

import itertools
import time

import pytest

from fastroute.canonical import Usage
from fastroute.config import config_from_dict
from fastroute.pipeline import Exchange
from fastroute.pricing import Pricing
from fastroute.providers import build_providers
from fastroute.recording.events import EventBus
from fastroute.recording.metrics import OTHER, LabelNames, Metrics
from fastroute.recording.recorder import Recorder
from fastroute.routing.catalogue import Catalogue

CONFIG = {
    "providers": [{"name": "echo", "format": "echo"},
                  {"name": "stub", "format": "openai", "base_url": "http://h/v1", "models": ["stub-model"]},
                  *({"name": f"p{i}", "format": "openai", "base_url": f"http://h{i}/v1",
                     "models": [f"m{i}-a", f"m{i}-b"]} for i in range(6))],
    "routers": [{"type": "prefix", "model_prefix": "echo", "provider": "echo"},
                {"type": "prefix", "model_prefix": "stub", "provider": "stub"}],
}


class AllNames(LabelNames):
    """Every name is a label (fastroute before the names were bounded)."""

    def provider(self, name: str) -> str:
        return name

    def model(self, name: str) -> str:
        return name


def _metrics(labels: str) -> Metrics:
    if labels == "unbounded":
        return Metrics(AllNames())
    cfg = config_from_dict(CONFIG)
    metrics = Metrics()
    metrics.label_only(Catalogue(cfg, build_providers(cfg, None)))
    return metrics


def _entry(model: str) -> dict:
    return {"provider": "stub", "sent_model": model, "requested_model": model, "status": 200, "duration_ms": 3.2,
            "ttft_ms": 1.1, "usage": {"input_tokens": 12, "output_tokens": 34},
            "attempts": [{"provider": "stub", "model": model, "status": 200, "error": None}]}


def _exchange(model: str) -> Exchange:
    return Exchange(id="req_0123456789abcdef", dialect="openai", started=time.perf_counter(),
                    ts_ms=int(time.time() * 1000), requested_model=model, provider="stub", sent_model=model,
                    status=200, usage=Usage(12, 34), duration_ms=3.2, response_text="stub: hello")


@pytest.mark.parametrize("labels", ["bounded", "unbounded"])
@pytest.mark.parametrize("model", ["configured", "invented"])
def test_observe(benchmark, labels: str, model: str) -> None:  # type: ignore[no-untyped-def]
    """One ``complete`` record counted; ``invented``: a new name every request (stub-0, stub-1, ...)."""
    benchmark.group = f"metrics-observe-{model}"
    metrics = _metrics(labels)
    if model == "configured":
        entry = _entry("stub-model")
        benchmark(metrics.observe, entry)
    else:
        entries = (_entry(f"stub-{i}") for i in itertools.count())
        benchmark(lambda: metrics.observe(next(entries)))
    # stub-0, the first name invented: under --benchmark-disable the only one
    assert (b'model="stub-0"' in metrics.render()) == (model == "invented" and labels == "unbounded")


@pytest.mark.parametrize("labels", ["bounded", "unbounded"])
@pytest.mark.parametrize("model", ["configured", "invented"])
def test_recorder_complete(benchmark, labels: str, model: str) -> None:  # type: ignore[no-untyped-def]
    """The recorder's whole end of an exchange (entry, metrics, event), no log, no console."""
    benchmark.group = f"recorder-complete-metrics-{model}"
    recorder = Recorder(EventBus(), _metrics(labels), None, Pricing(providers={"stub": 1.0}, table={}))
    if model == "configured":
        benchmark(recorder.complete, _exchange("stub-model"), 0)
    else:
        exchanges = (_exchange(f"stub-{i}") for i in itertools.count())
        benchmark(lambda: recorder.complete(next(exchanges), 0))


@pytest.mark.parametrize("labels", ["bounded", "unbounded"])
def test_render_after_2000_invented_names(benchmark, labels: str) -> None:  # type: ignore[no-untyped-def]
    """``GET /metrics``'s body after 2,000 requests, each for a model name never seen before."""
    benchmark.group = "metrics-render"
    metrics = _metrics(labels)
    for i in range(2000):
        metrics.observe(_entry(f"stub-{i:08x}"))
    body = benchmark.pedantic(metrics.render, rounds=3, iterations=1)
    benchmark.extra_info["bytes"] = len(body)
    assert (f'model="{OTHER}"'.encode() in body) == (labels == "bounded")
