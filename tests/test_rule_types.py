"""Each figure-based rule type on its own table, through a real fastroute and both chat dialects.

tests/test_pipeline.py runs one table holding every rule type, where the first
figure rule (``price``) answers everything after it; here ``latency``,
``throughput``, ``fallback`` and ``random`` each decide alone, over three
providers whose declared figures disagree, so a wrong choice shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FastrouteProcess
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hello"}]


def providers(stub: StubUpstream) -> str:
    # cheap: cheapest, slowest, weakest; fast: lowest latency, highest throughput; smart: best, dearest, no latency
    figures = {
        "cheap": "cost_per_1m_tokens = 1.0\nquality = 50\nlatency_ms = 800\nthroughput_tokens_per_sec = 20",
        "fast": "cost_per_1m_tokens = 5.0\nquality = 70\nlatency_ms = 100\nthroughput_tokens_per_sec = 200",
        "smart": "cost_per_1m_tokens = 20.0\nquality = 95\nthroughput_tokens_per_sec = 40",
    }
    return "".join(f'[[providers]]\nname = "{name}"\nformat = "openai"\nbase_url = "{stub.base_url}"\n{fig}\n\n'
                   for name, fig in figures.items())


TABLES = {
    "price": 'type = "price"\nproviders = []\nmax_cost_per_1m_tokens = 10',
    "price-too-dear": 'type = "price"\nproviders = ["fast", "smart"]\nmax_cost_per_1m_tokens = 2',
    "latency": 'type = "latency"\nproviders = []\nmax_latency_ms = 500',
    "latency-none-fast-enough": 'type = "latency"\nproviders = ["cheap", "smart"]\nmax_latency_ms = 500',
    "throughput": 'type = "throughput"\nproviders = []\nmin_tokens_per_sec = 30',
    "throughput-among": 'type = "throughput"\nproviders = ["cheap", "smart"]\nmin_tokens_per_sec = 30',
    "fallback-quality": 'type = "fallback"\nproviders = []\nquality_bias = 0.9\nrewrite_model = "best-model"',
    "fallback-cost": 'type = "fallback"\nproviders = []\nquality_bias = 0.1',
    "random": 'type = "random"\ncandidates = [{ provider = "cheap", model = "m-cheap" }, '
              '{ provider = "smart", model = "m-smart" }]',
}

# table -> (provider, model) chosen, or None when nothing matches (400)
EXPECTED: dict[str, tuple[str, str] | None] = {
    "price": ("cheap", "gpt-x"),
    "price-too-dear": None,
    "latency": ("fast", "gpt-x"),
    "latency-none-fast-enough": None,  # smart declares no latency: excluded, cheap is too slow
    "throughput": ("fast", "gpt-x"),
    "throughput-among": ("smart", "gpt-x"),
    "fallback-quality": ("smart", "best-model"),
    "fallback-cost": ("cheap", "gpt-x"),
}


@pytest.fixture(scope="module", params=list(TABLES))
def table(request: pytest.FixtureRequest, stub: StubUpstream,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FastrouteProcess]]:
    conf: Path = tmp_path_factory.mktemp("rules") / f"{request.param}.toml"
    conf.write_text(providers(stub) + "[[routers]]\n" + TABLES[request.param] + "\n")
    proc = FastrouteProcess([str(conf)]).start()
    yield request.param, proc
    proc.stop()


def ask(proc: FastrouteProcess, dialect: str, stream: bool) -> httpx.Response:
    if dialect == "openai":
        return httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                          json={"model": "gpt-x", "messages": USER, "stream": stream})
    return httpx.post(f"{proc.url}/v1/messages", timeout=30,
                      json={"model": "gpt-x", "max_tokens": 20, "messages": USER, "stream": stream})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_rule_decides(table: tuple[str, FastrouteProcess], stub: StubUpstream, dialect: str, stream: bool) -> None:
    name, proc = table
    if name == "random":
        seen = set()
        for _ in range(40):  # both candidates, each with its own model (a miss has odds 2^-39)
            resp = ask(proc, dialect, stream)
            assert resp.status_code == 200, resp.text
            seen.add((resp.headers["x-router-provider"], resp.headers["x-router-model"]))
        assert seen == {("cheap", "m-cheap"), ("smart", "m-smart")}
        return
    resp = ask(proc, dialect, stream)
    expected = EXPECTED[name]
    if expected is None:
        assert resp.status_code == 400, resp.text
        message = resp.json()["error"]["message"]
        assert message == "no provider configured for model 'gpt-x'", message
        return
    assert resp.status_code == 200, resp.text
    assert (resp.headers["x-router-provider"], resp.headers["x-router-model"]) == expected
    assert stub.requests[-1].body["model"] == expected[1]
    assert "stub" in resp.text  # the stub's answer, streamed in pieces or whole


def test_route_explains_why_a_figure_rule_did_not_match(table: tuple[str, FastrouteProcess]) -> None:
    name, proc = table
    data = httpx.post(f"{proc.url}/v1/route", json={"model": "gpt-x", "messages": USER}, timeout=30).json()
    if EXPECTED.get(name, "random") is None:
        assert data["route"] is None and not data["rules"][0]["matched"] and data["rules"][0]["reason"]
    else:
        assert data["rules"][0]["matched"] and data["route"]["provider"] in {"cheap", "fast", "smart"}
