"""``GET /metrics`` stays bounded: a model name a client made up is counted as ``other``, never
as a label of its own; configured and discovered names keep theirs.  Through a real fastroute,
to the stub and to an Ollama whose models change while the server runs."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from fastroute.config import config_from_dict, load_config
from fastroute.providers import build_providers
from fastroute.recording.metrics import (
    MAX_KEY_LABELS,
    NO_KEY,
    OTHER,
    LabelNames,
    Metrics,
)
from fastroute.routing.catalogue import Catalogue
from tests.conftest import FastrouteProcess
from tests.stub_upstream import StubUpstream

SAMPLE = re.compile(rb"^(\w+)\{([^}]*)\} ", re.MULTILINE)


@dataclass
class ChangingOllama(StubUpstream):
    """An Ollama whose pulled models the test changes."""

    names: list[str] = field(default_factory=lambda: ["llama-a:8b"])

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": n, "model": n, "details": {"family": "llama"}}
                                             for n in self.names]})

    async def _show(self, request: web.Request) -> web.Response:
        return web.json_response({"capabilities": ["completion"], "details": {"family": "llama"}})


@pytest.fixture
def local() -> Iterator[ChangingOllama]:
    upstream = ChangingOllama().start()
    yield upstream
    upstream.stop()


def config(stub: StubUpstream, local: ChangingOllama) -> str:
    return f"""
[discovery]
interval_s = 0.2
timeout_s = 2

[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
models = ["stub-model"]

[[providers]]
name = "local"
format = "ollama"
base_url = "http://{local.host}:{local.port}"
discover = true

[[routers]]
type = "discover"
provider = "local"

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"
"""


def invent(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{os.urandom(6).hex()}" for _ in range(n)]


async def send(url: str, models: list[str]) -> list[int]:
    """One short chat request per model, 32 at a time; the status of each."""
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        async def one(model: str) -> int:
            async with limit:
                resp = await client.post("/v1/chat/completions",
                                         json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
                return resp.status_code

        return await asyncio.gather(*(one(m) for m in models))


def series(text: bytes) -> set[bytes]:
    """Every labelled series of /metrics (metric name and labels, without the value)."""
    return {m.group(1) + b"{" + m.group(2) + b"}" for m in SAMPLE.finditer(text)}


def count(text: str, metric: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{metric}\{{{re.escape(inner)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_invented_model_names_never_become_labels(stub: StubUpstream, local: ChangingOllama,
                                                  tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, local))
    proc = FastrouteProcess([str(conf)]).start()
    try:
        def batch() -> list[str]:
            invented = invent("echo-", 120) + invent("stub-", 40) + invent("zz-", 120)
            statuses = asyncio.run(send(proc.url, invented))
            # routed by a prefix rule (echo, stub), or refused: no rule matches
            assert statuses == [200] * 160 + [400] * 120
            return invented

        known = ["stub-model"] * 5 + ["echo"] * 3 + ["llama-a:8b"] * 4
        assert asyncio.run(send(proc.url, known)) == [200] * len(known)
        first = batch()
        after_first = httpx.get(f"{proc.url}/metrics").content
        second = batch()
        after_second = httpx.get(f"{proc.url}/metrics").content

        # none of the invented names is a label; twice the requests, not one series more
        assert not [name for name in first + second if name.encode() in after_second]
        assert series(after_second) == series(after_first)
        assert len(after_second) < 40_000

        text = after_second.decode()
        requests = "fastroute_requests_total"
        assert count(text, requests, model="stub-model", provider="stub", status="200") == 5
        assert count(text, requests, model="echo", provider="echo", status="200") == 3
        assert count(text, requests, model="llama-a:8b", provider="local", status="200") == 4  # discovered
        assert count(text, requests, model=OTHER, provider="echo", status="200") == 240
        assert count(text, requests, model=OTHER, provider="stub", status="200") == 80
        assert count(text, requests, model=OTHER, provider="none", status="400") == 240
        assert count(text, "fastroute_tokens_total", direction="in", model="stub-model", provider="stub") > 0

        # a model pulled while the server runs gets its label once discovery has seen it
        local.names.append("llama-b:3b")
        deadline = time.monotonic() + 15
        while "llama-b:3b" not in httpx.get(f"{proc.url}/api/tags").text:
            assert time.monotonic() < deadline, "discovery never listed the new model"
            time.sleep(0.1)
        assert asyncio.run(send(proc.url, ["llama-b:3b"] * 2)) == [200, 200]
        text = httpx.get(f"{proc.url}/metrics").text
        assert count(text, requests, model="llama-b:3b", provider="local", status="200") == 2
    finally:
        proc.stop()


def test_labels_follow_the_catalogue(stub: StubUpstream, local: ChangingOllama, tmp_path: Path) -> None:
    """In process: a known name is one set lookup; a newly discovered one is picked up when the
    provider's list is replaced (as discovery does), and an invented one stays ``other``."""
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, local))
    cfg = load_config(conf)
    providers = build_providers(cfg, None)
    metrics = Metrics()
    assert metrics.names.model("stub-model") == OTHER  # no catalogue: nothing is known
    metrics.label_only(Catalogue(cfg, providers))
    names = metrics.names
    assert names.model("stub-model") == "stub-model" and names.model("echo") == "echo"
    assert names.provider("stub") == "stub" and names.provider("none") == "none"
    assert names.provider("made-up") == OTHER
    assert names.model("llama-c:1b") == OTHER and names.model("stub-42") == OTHER
    providers["local"].discovered = {"llama-c:1b": frozenset()}
    assert names.model("llama-c:1b") == "llama-c:1b"
    assert names.model("stub-42") == OTHER


def test_the_in_flight_gauge_is_read_when_scraped() -> None:
    """One process: the gauge follows the pipeline's count, nobody sets it per request."""
    metrics, count = Metrics(), [3]
    metrics.follow_in_flight(lambda: count[0])
    metrics.set_in_flight(99)  # ignored: the count is read at scrape time
    assert "fastroute_in_flight_requests 3.0" in metrics.render().decode()
    count[0] = 0
    assert "fastroute_in_flight_requests 0.0" in metrics.render().decode()


def test_bound_series_count_like_labels() -> None:
    """The children bound once per (provider, model, status) count what labels() would."""
    metrics = Metrics()
    for status in (200, 200, 502):
        metrics.observe({"provider": "none", "sent_model": "", "status": status, "duration_ms": 5.0,
                         "usage": {"input_tokens": 2, "output_tokens": 3},
                         "attempts": [{"provider": "none", "status": status,
                                       "error": None if status == 200 else "x"}]})
    text = metrics.render().decode()
    assert 'fastroute_requests_total{model="other",provider="none",status="200"} 2.0' in text
    assert 'fastroute_requests_total{model="other",provider="none",status="502"} 1.0' in text
    assert 'fastroute_tokens_total{direction="in",model="other",provider="none"} 6.0' in text
    assert 'fastroute_upstream_errors_total{provider="none",status="502"} 1.0' in text


def test_bound_series_show_no_empty_ttft_or_failover_series() -> None:
    """A JSON answer with no failover leaves no zero series of those two in /metrics."""
    metrics = Metrics()
    plain = {"provider": "none", "sent_model": "", "status": 200, "duration_ms": 5.0, "usage": None, "attempts": []}
    metrics.observe(plain)
    text = metrics.render().decode()
    assert "fastroute_time_to_first_token_seconds_count{" not in text and "fastroute_failovers_total{" not in text
    metrics.observe({**plain, "ttft_ms": 2.0, "attempts": [{"provider": "none", "status": 500, "error": "x"},
                                                            {"provider": "none", "status": 200, "error": None}]})
    text = metrics.render().decode()
    assert 'fastroute_time_to_first_token_seconds_count{model="other",provider="none"} 1.0' in text
    assert 'fastroute_failovers_total{model="other",provider="none"} 1.0' in text


def test_key_labels_are_bounded_first_come_without_config() -> None:
    """Keys no config names (made at run time) are labelled as they come, up to the bound;
    past it every new one is ``other``, and a labelled one stays labelled."""
    names = LabelNames()
    made = [f"made-{i:03d}" for i in range(MAX_KEY_LABELS + 50)]
    labels = [names.key(k) for k in made]
    assert labels == made[:MAX_KEY_LABELS] + [OTHER] * 50
    assert names.key(made[0]) == made[0] and names.key(made[-1]) == OTHER
    assert names.key(None) == NO_KEY
    assert len(names.keys) == MAX_KEY_LABELS


def test_configured_keys_are_labelled_before_others() -> None:
    """The config's keys (and ``server`` for api_key_env) hold their labels from the start, in the
    config's order, however many others come first."""
    keys = [{"name": f"conf-{i:03d}", "key_sha256": f"{i:064x}"} for i in range(MAX_KEY_LABELS + 10)]
    cfg = config_from_dict({"server": {"api_key_env": "FR_SHARED"}, "keys": keys,
                            "providers": [{"name": "echo", "format": "echo"}]})
    names = LabelNames(Catalogue(cfg, build_providers(cfg, None)))
    assert names.key("made-at-run-time") == OTHER  # the bound is taken by the config's keys
    assert names.key("server") == "server" and names.key("conf-000") == "conf-000"
    assert names.key(f"conf-{MAX_KEY_LABELS - 2:03d}") == f"conf-{MAX_KEY_LABELS - 2:03d}"
    assert names.key(f"conf-{MAX_KEY_LABELS - 1:03d}") == OTHER  # "server" took the first place


def test_cost_tokens_and_refusals_by_key_count_like_labels() -> None:
    """No key: cost under ``none``, no per-key tokens (fastroute_tokens_total has them); a refusal's
    limit is labelled by the limit that refused; cost is in USD from micro-dollars."""
    metrics = Metrics()
    done = {"provider": "none", "sent_model": "", "status": 200, "duration_ms": 5.0, "attempts": [],
            "usage": {"input_tokens": 7, "output_tokens": 3}, "cost_micros": 1_250}
    metrics.observe({**done, "key_name": None})
    metrics.observe({**done, "key_name": "team-a"})
    metrics.observe({**done, "key_name": "team-a", "cost_micros": 750})
    for limit in ("requests_per_minute", "budget_usd", "budget_usd", "tokens_per_minute"):
        metrics.observe({"provider": None, "requested_model": "m", "status": 429, "duration_ms": 0.1, "attempts": [],
                         "usage": None, "cost_micros": None, "key_name": "team-b", "limited_by": limit})
    text = metrics.render().decode()
    assert 'fastroute_cost_usd_total{key="none",model="other",provider="none"} 0.00125' in text
    assert 'fastroute_cost_usd_total{key="team-a",model="other",provider="none"} 0.002' in text
    assert 'fastroute_key_tokens_total{direction="in",key="team-a"} 14.0' in text
    assert 'fastroute_key_tokens_total{direction="out",key="team-a"} 6.0' in text
    assert 'key_tokens_total{direction="in",key="none"}' not in text
    assert 'fastroute_rate_limited_total{key="team-b",limit="budget"} 2.0' in text
    assert 'fastroute_rate_limited_total{key="team-b",limit="requests_per_minute"} 1.0' in text
    assert 'fastroute_rate_limited_total{key="team-b",limit="tokens_per_minute"} 1.0' in text
    assert 'key="team-b",model' not in text  # refused before anything was spent
