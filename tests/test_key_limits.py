"""A key's rate limit and budget on the request path, through a real fastroute: a 429 with
``Retry-After`` in the client's own dialect when the key reached its limit, counted exactly
across ``--workers 2`` (one SQLite file) and kept across a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FastrouteProcess, two_dialects
from tests.stub_upstream import StubUpstream

SECRET = "sk-fr-limited-0123456789abcdef"
RICH = "sk-fr-budgeted-0123456789abcdef"
USER = [{"role": "user", "content": "hello"}]
ENV = {"FR_LIMIT_KEY": SECRET, "FR_BUDGET_KEY": RICH}


def config(stub: StubUpstream, tmp: Path) -> str:
    return f"""
[storage]
kind = "sqlite"
path = "{tmp / 'state.sqlite3'}"

[audit]
path = "{tmp / 'audit.sqlite3'}"

[[keys]]
name = "limited"
key_env = "FR_LIMIT_KEY"
rate_limit = {{ requests_per_minute = 3 }}

[[keys]]
name = "budgeted"
key_env = "FR_BUDGET_KEY"
budget = {{ usd = 0.000001, period = "day" }}

[pricing."gpt-dear"]
prompt_cost_per_million = 1000.0
completion_cost_per_million = 1000.0

{two_dialects(stub)}"""


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[Path]:
    stub = StubUpstream().start()
    path = tmp_path / "c.toml"
    path.write_text(config(stub, tmp_path))
    yield path
    stub.stop()


def post(proc: FastrouteProcess, key: str, model: str = "gpt-x") -> httpx.Response:
    return httpx.post(f"{proc.url}/v1/chat/completions", json={"model": model, "messages": USER},
                      headers={"authorization": f"Bearer {key}"})


def within_one_minute() -> None:
    """Start where the next 30 s stay inside one UTC minute: the sliding window weighs the last
    minute's requests by how much of it is still within 60 s, so right after a minute turns, a
    key at its limit is let through once more (the window's known, documented estimate)."""
    into = time.time() % 60
    if into > 25:
        time.sleep(60 - into + 0.5)


@pytest.mark.parametrize("workers", [1, 2])
def test_requests_per_minute_hold_across_workers_and_restarts(conf: Path, workers: int) -> None:
    within_one_minute()
    proc = FastrouteProcess([str(conf), "--workers", str(workers)], env=ENV, workers=workers).start()
    try:
        statuses = [post(proc, SECRET).status_code for _ in range(8)]  # new connections: both workers serve
        assert statuses.count(200) == 3 and statuses.count(429) == 5, statuses
        refused = post(proc, SECRET)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and "key 'limited' reached its limit of requests" in error["message"]
        with pytest.raises(anthropic.RateLimitError) as caught:
            anthropic.Anthropic(base_url=proc.url, api_key=SECRET, max_retries=0).messages.create(
                model="claude-x", max_tokens=16, messages=USER)
        assert caught.value.body["error"]["type"] == "rate_limit_error"
        assert caught.value.response.headers["retry-after"]
    finally:
        assert proc.stop() == 0
    again = FastrouteProcess([str(conf)], env=ENV).start()  # the same minute, counted in the file
    try:
        assert post(again, SECRET).status_code == 429
    finally:
        again.stop()


def test_a_spent_budget_refuses_until_its_period_ends(conf: Path) -> None:
    proc = FastrouteProcess([str(conf)], env=ENV).start()
    try:
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=RICH, max_retries=0)
        chunks = list(client.chat.completions.create(model="gpt-dear", messages=USER, stream=True))
        assert chunks  # a stream is counted at its end: this one spends far more than the budget
        deadline_tries = 50
        while deadline_tries and post(proc, RICH, "gpt-dear").status_code == 200:  # the end is counted a moment later
            deadline_tries -= 1
        with pytest.raises(openai.RateLimitError, match="key 'budgeted' reached its budget") as caught:
            client.chat.completions.create(model="gpt-dear", messages=USER)
        retry = int(caught.value.response.headers["retry-after"])
        assert 1 <= retry <= 86_400  # at most until the end of the UTC day
        assert post(proc, SECRET, "gpt-dear").status_code == 200  # another key is not touched
    finally:
        proc.stop()
