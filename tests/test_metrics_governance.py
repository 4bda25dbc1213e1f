"""``GET /metrics`` counts what keys cost and how often their limits refused them, through a real
fastroute (one worker, and two sharing the counters' limits.shm file) in front of the stub:

- ``fastroute_cost_usd_total{provider,model,key}``: the cost of the finished requests, exact to
  the micro-dollar, computed here from the usage each answer carried and the configured prices;
- ``fastroute_key_tokens_total{key,direction}``: their tokens per key;
- ``fastroute_rate_limited_total{key,limit}``: the refusals of each limit, as many as the client
  got 429s for it, and never a provider's own 429;
- key labels are bounded: 155 configured keys, 100 labelled (the config's first), the rest ``other``;
- no secret of any kind is ever in ``/metrics``.

Each test uses keys of its own, so the module's server can be shared whatever the order.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fastroute.recording.metrics import MAX_KEY_LABELS, OTHER
from tests.conftest import PROVIDER_KEY, FastrouteProcess
from tests.stub_upstream import StubUpstream

SECRETS = {name: f"sk-fr-{name}-{hashlib.sha256(name.encode()).hexdigest()[:24]}"
           for name in ("alice", "bob", "carol", "limited", "thrifty", "wordy")}
ENV = {f"FR_KEY_{name.upper()}": secret for name, secret in SECRETS.items()}
#: keys configured by digest only: enough of them to pass the label bound
MANY = 150
MANY_SECRETS = [f"sk-fr-many-{i:03d}-{hashlib.sha256(str(i).encode()).hexdigest()[:20]}" for i in range(MANY)]
#: the price of gpt-dear, in micro-dollars a token (USD per million tokens)
PROMPT, CACHED, COMPLETION = 1000, 500, 2000
USER = [{"role": "user", "content": "hello there"}]


def config(stub: StubUpstream, tmp: Path) -> str:
    limits = {"limited": "rate_limit = { requests_per_minute = 3 }",
              "thrifty": 'budget = { usd = 0.000001, period = "day" }',
              "wordy": "rate_limit = { tokens_per_minute = 1 }"}
    named = "\n".join(f'[[keys]]\nname = "{name}"\nkey_env = "FR_KEY_{name.upper()}"\n{limits.get(name, "")}\n'
                      for name in SECRETS)
    many = "\n".join(f'[[keys]]\nname = "k{i:03d}"\nkey_sha256 = "{hashlib.sha256(s.encode()).hexdigest()}"\n'
                     for i, s in enumerate(MANY_SECRETS))
    return f"""
[storage]
kind = "sqlite"
path = "{tmp / 'state.sqlite3'}"

[audit]
path = "{tmp / 'audit.sqlite3'}"

{named}
{many}

[pricing."gpt-dear"]
prompt_cost_per_million = {PROMPT}.0
cached_prompt_cost_per_million = {CACHED}.0
completion_cost_per_million = {COMPLETION}.0

[[providers]]
name = "stub-openai"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
models = ["gpt-dear", "gpt-free", "stub-429"]

[[routers]]
type = "prefix"
model_prefix = ""
provider = "stub-openai"
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    workers = request.param
    tmp = tmp_path_factory.mktemp("metrics-governance")
    stub = StubUpstream().start()
    conf = tmp / "c.toml"
    conf.write_text(config(stub, tmp))
    proc = FastrouteProcess([str(conf), "--workers", str(workers)],
                            env={**ENV, "FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}, workers=workers).start()
    try:
        yield proc
    finally:
        proc.stop()
        stub.stop()


def chat(proc: FastrouteProcess, secret: str | None, model: str = "gpt-dear", stream: bool = False) -> httpx.Response:
    """One request on a new connection (with two workers, either may answer it)."""
    body: dict[str, Any] = {"model": model, "messages": USER}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {secret}"} if secret is not None else {}
    return httpx.post(f"{proc.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def usage_of(resp: httpx.Response) -> dict[str, Any]:
    """The usage the answer carried (a stream's: its usage chunk)."""
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        events = [orjson.loads(line[6:]) for line in resp.text.splitlines()
                  if line.startswith("data: {")]
        return next(e["usage"] for e in events if e.get("usage"))
    return resp.json()["usage"]


def micros(usage: dict[str, Any]) -> int:
    """What gpt-dear's price makes of a usage: whole micro-dollars, no rounding needed."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return (usage["prompt_tokens"] - cached) * PROMPT + cached * CACHED + usage["completion_tokens"] * COMPLETION


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``metric``: its labels and its value."""
    out = []
    for labels, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        out.append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)), float(value)))
    return out


def value(text: str, metric: str, **labels: str) -> float | None:
    """The sample of ``metric`` with exactly these labels; None when there is none."""
    found = [v for got, v in samples(text, metric) if got == labels]
    assert len(found) <= 1
    return found[0] if found else None


def scrape(proc: FastrouteProcess) -> str:
    resp = httpx.get(f"{proc.url}/metrics")
    assert resp.status_code == 200
    return resp.text


def test_cost_and_tokens_are_counted_per_key_exactly(server: FastrouteProcess) -> None:
    spent = {"alice": 0, "bob": 0}
    tokens = {"alice": [0, 0], "bob": [0, 0]}

    def count(name: str, resp: httpx.Response, priced: bool = True) -> None:
        usage = usage_of(resp)
        if priced:
            spent[name] += micros(usage)
        tokens[name][0] += usage["prompt_tokens"]
        tokens[name][1] += usage["completion_tokens"]

    for _ in range(3):
        count("alice", chat(server, SECRETS["alice"]))
    for _ in range(2):
        count("alice", chat(server, SECRETS["alice"], "gpt-free"), priced=False)  # priced at 0
    for _ in range(2):
        count("bob", chat(server, SECRETS["bob"]))
    count("bob", chat(server, SECRETS["bob"], stream=True))  # a stream is counted at its end

    text = scrape(server)
    assert spent["alice"] > 0 and spent["bob"] > spent["alice"] * 2 // 3  # the stream's answer is longer
    for name in ("alice", "bob"):
        got = value(text, "fastroute_cost_usd_total", provider="stub-openai", model="gpt-dear", key=name)
        assert got is not None and round(got * 1_000_000) == spent[name], (name, got, spent[name])
        assert abs(got - spent[name] / 1_000_000) < 1e-12
        assert value(text, "fastroute_key_tokens_total", key=name, direction="in") == tokens[name][0]
        assert value(text, "fastroute_key_tokens_total", key=name, direction="out") == tokens[name][1]
    # no [pricing] for gpt-free: the provider's cost_per_1m_tokens prices it, 0 unless configured
    assert value(text, "fastroute_cost_usd_total", provider="stub-openai", model="gpt-free", key="alice") == 0.0


def test_rate_limited_counts_each_refusal_by_its_limit(server: FastrouteProcess) -> None:
    refused: dict[str, int] = {}

    def note(resp: httpx.Response) -> int:
        if resp.status_code == 429:
            code = resp.json()["error"]["code"]
            refused[code] = refused.get(code, 0) + 1
        return resp.status_code

    # requests per minute: 3 admitted in the key's first minute (4 when the minute turns meanwhile)
    statuses = [note(chat(server, SECRETS["limited"])) for _ in range(8)]
    assert statuses.count(200) in (3, 4) and refused["requests_per_minute"] == statuses.count(429)

    # tokens per minute and budget: the first answer's usage passes the limit once it is settled
    for name, code in (("wordy", "tokens_per_minute"), ("thrifty", "budget_usd")):
        assert chat(server, SECRETS[name]).status_code == 200
        tries = 50
        while note(chat(server, SECRETS[name])) == 200:  # settled a moment after the answer
            tries -= 1
            assert tries, f"{name} was never refused"
        for _ in range(3):
            assert note(chat(server, SECRETS[name])) == 429
        assert refused[code] == 4

    # the provider's own 429 (the stub's) is the provider's, not a key's limit
    assert chat(server, SECRETS["carol"], "stub-429").status_code == 429

    text = scrape(server)
    assert value(text, "fastroute_rate_limited_total", key="limited", limit="requests_per_minute") == \
        refused["requests_per_minute"]
    assert value(text, "fastroute_rate_limited_total", key="wordy", limit="tokens_per_minute") == 4
    assert value(text, "fastroute_rate_limited_total", key="thrifty", limit="budget") == 4
    by_key = {(labels["key"], labels["limit"]) for labels, _ in samples(text, "fastroute_rate_limited_total")}
    assert {k for k in by_key if k[0] in SECRETS} == {("limited", "requests_per_minute"),
                                                      ("wordy", "tokens_per_minute"), ("thrifty", "budget")}
    assert value(text, "fastroute_requests_total", provider="stub-openai", model="stub-429", status="429") == 1


async def _one_each(url: str, secrets: list[str]) -> list[int]:
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        async def one(secret: str) -> int:
            async with limit:
                resp = await client.post("/v1/chat/completions", json={"model": "gpt-dear", "messages": USER},
                                         headers={"authorization": f"Bearer {secret}"})
                return resp.status_code

        return await asyncio.gather(*(one(s) for s in secrets))


def test_key_labels_are_bounded_configured_keys_first(server: FastrouteProcess) -> None:
    """155 keys are configured (6 by name, then k000..k149): the first 100 of the config have a
    label of their own, whatever order they call in; the other 56 share ``other``."""
    first = chat(server, MANY_SECRETS[0])
    each = micros(usage_of(first))  # every request here has the same usage
    statuses = asyncio.run(_one_each(server.url, MANY_SECRETS[::-1]))  # the last configured call first
    assert statuses == [200] * MANY
    text = scrape(server)
    costs = {labels["key"]: v for labels, v in samples(text, "fastroute_cost_usd_total")}
    labelled = MAX_KEY_LABELS - len(SECRETS)  # after the six named keys
    assert {k for k in costs if k.startswith("k")} == {f"k{i:03d}" for i in range(labelled)}
    assert round(costs["k000"] * 1_000_000) == 2 * each
    assert round(costs["k001"] * 1_000_000) == each
    assert round(costs[OTHER] * 1_000_000) == (MANY - labelled) * each
    keys = {labels["key"] for metric in ("fastroute_cost_usd_total", "fastroute_key_tokens_total",
                                         "fastroute_rate_limited_total") for labels, _ in samples(text, metric)}
    assert len(keys - {OTHER, "none"}) <= MAX_KEY_LABELS
    assert not [f"k{i:03d}" for i in range(labelled, MANY) if f'"k{i:03d}"' in text]
    tokens_in = value(text, "fastroute_key_tokens_total", key=OTHER, direction="in")
    assert tokens_in == (MANY - labelled) * usage_of(first)["prompt_tokens"]


def test_no_secret_is_ever_in_metrics(server: FastrouteProcess) -> None:
    wrong = "sk-fr-wrong-a1b2c3d4e5f6a7b8c9d0e1f2"
    assert chat(server, SECRETS["alice"]).status_code == 200
    assert chat(server, wrong).status_code == 401
    assert chat(server, None).status_code == 401
    text = scrape(server)
    assert 'key="alice"' in text and "fastroute_cost_usd_total" in text  # it did count them
    secrets = [*SECRETS.values(), *MANY_SECRETS, wrong, PROVIDER_KEY]
    digests = [hashlib.sha256(s.encode()).hexdigest() for s in secrets]
    leaked = [s for s in (*secrets, *digests) if s in text or s[:16] in text]
    assert not leaked
