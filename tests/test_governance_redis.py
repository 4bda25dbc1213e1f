"""Two fastroute instances sharing one real redis-server (with a password): a key made on one
works on the other at once, its rate limit and budget are counted across both, a revocation
reaches both, the audit log (in Redis) and ``fastroute usage`` see both instances' requests; Redis away:
the keys last loaded keep serving, said once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import FastrouteProcess, free_port, two_dialects
from tests.redis_server import PASSWORD, RedisServer, redis_url
from tests.stub_upstream import StubUpstream
from tests.test_admin_keys import ADMIN, USER, admin, cli, created_secret, post
from tests.test_key_limits import within_one_minute

ENV = {"FR_KEYS_ADMIN": ADMIN, "FR_GOV_REDIS_PASSWORD": PASSWORD}


def config(stub: StubUpstream, port: int, prefix: str) -> str:
    return f"""
[admin]
token_env = "FR_KEYS_ADMIN"

[storage]
kind = "redis"
redis_url = "{redis_url(port)}"
redis_password_env = "FR_GOV_REDIS_PASSWORD"
key_prefix = "{prefix}"

[pricing."gpt-keyed"]
prompt_cost_per_million = 1000.0
completion_cost_per_million = 2000.0

{two_dialects(stub)}"""


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[FastrouteProcess, FastrouteProcess]]:
    stub = StubUpstream().start()
    conf = tmp_path / "shared.toml"
    conf.write_text(config(stub, redis_server.port, f"gov-{time.monotonic_ns()}:"))
    a = FastrouteProcess([str(conf)], env=ENV).start()
    b = FastrouteProcess([str(conf), "--workers", "2"], env=ENV, workers=2).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        stub.stop()
    for proc in (a, b):
        assert PASSWORD not in proc.output


def test_keys_limits_and_budgets_hold_across_two_instances(pair: tuple[FastrouteProcess, FastrouteProcess]) -> None:
    a, b = pair
    within_one_minute()
    made = cli(a, "keys", "create", "shared", "--rpm", "4")
    assert made.returncode == 0, made.stderr
    secret = created_secret(made.stdout)
    assert post(b, secret).status_code == 200  # made on A, served by B at once
    assert post(a, secret).status_code == 200
    assert post(b, secret).status_code == 200
    assert post(a, secret).status_code == 200
    for proc in (a, b, b, a):  # four a minute, counted by both instances together
        refused = post(proc, secret)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    window = httpx.get(f"{b.url}/v1/budget", headers={"authorization": f"Bearer {secret}"}).json()["rate_limit"]
    assert window["requests_per_minute"] == 4 and window["requests_in_window"] >= 4

    cheap = cli(b, "keys", "create", "cheap", "--budget", "0.000001")
    cheap_secret = created_secret(cheap.stdout)
    assert post(a, cheap_secret).status_code == 200  # spends far more than the budget, on A
    client = openai.OpenAI(base_url=f"{b.url}/v1", api_key=cheap_secret, max_retries=0)
    deadline = time.monotonic() + 10
    while True:  # the spend is settled a moment after the answer
        try:
            client.chat.completions.create(model="gpt-keyed", messages=USER)
        except openai.RateLimitError as exc:
            assert "key 'cheap' reached its budget" in str(exc)
            break
        assert time.monotonic() < deadline, "B never saw what A spent"
    spent = httpx.get(f"{a.url}/v1/budget", headers={"authorization": f"Bearer {cheap_secret}"}).json()["budget"]
    assert spent["spent_usd"] > spent["usd"] == 0.000001

    # one audit log for both: each instance's answers are in what the other reports
    deadline = time.monotonic() + 10
    while True:
        logs = admin(a, "GET", "/v1/admin/logs?key=shared").json()["data"]
        if len(logs) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(r["status"] for r in logs) == [200] * 4 + [429] * 4
    usage = cli(b, "usage", "--by", "key")
    rows = {line.split()[0]: line.split() for line in usage.stdout.splitlines()[1:]}
    assert rows["shared"][1] == "8" and int(rows["cheap"][1]) >= 2, usage.stdout
    cost = sum(r["cost_micros"] or 0 for r in admin(b, "GET", "/v1/admin/logs?key=shared").json()["data"])
    assert rows["shared"][5] == f"{cost / 1e6:.6f}" and cost > 0

    assert admin(b, "DELETE", "/v1/admin/keys/shared").status_code == 200
    deadline = time.monotonic() + 5
    while post(a, secret).status_code != 401:  # one Redis message away
        assert time.monotonic() < deadline, "A kept a revoked key"
    assert {post(proc, secret).status_code for proc in (a, b, a, b)} == {401}
    listed = cli(a, "keys", "list")
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["cheap"]


def test_redis_away_keeps_serving_the_keys_last_loaded(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(port, PASSWORD, aof_dir=tmp_path)
    stub = StubUpstream().start()
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, port, "away:"))
    proc = FastrouteProcess([str(conf)], env=ENV).start()
    try:
        made = admin(proc, "POST", "/v1/admin/keys", {"name": "kept", "rate_limit": {"requests_per_minute": 1000}})
        secret = made.json()["key"]
        assert post(proc, secret).status_code == 200
        server.kill()
        assert [post(proc, secret).status_code for _ in range(5)] == [200] * 5  # counted here meanwhile
        assert post(proc, "fr-never-made").status_code == 401
        unavailable = admin(proc, "POST", "/v1/admin/keys", {"name": "later"})
        assert unavailable.status_code == 503 and unavailable.json()["error"]["type"] == "storage_unavailable"
        assert proc.output.count("keys: cannot reach") == 1
        server = RedisServer(port, PASSWORD, aof_dir=tmp_path)  # back, with its append-only file
        deadline = time.monotonic() + 15
        while "is back; keys loaded again" not in proc.output:
            post(proc, secret)
            assert time.monotonic() < deadline, proc.output
            time.sleep(0.1)
        assert post(proc, secret).status_code == 200
        assert admin(proc, "POST", "/v1/admin/keys", {"name": "later"}).status_code == 201
    finally:
        proc.stop()
        stub.stop()
        server.kill()
    assert PASSWORD not in proc.output
