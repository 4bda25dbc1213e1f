"""Keys made by the admin API and the ``fastroute keys`` / ``fastroute usage`` commands, through a
real fastroute: a key created with the CLI works at once from the openai and anthropic SDKs
(streams too), each call is in ``fastroute usage`` and ``/v1/admin/logs`` with its exact cost,
its rate limit and budget answer 429, changes reach every worker at once, and the key outlives
a restart (SQLite)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ROOT, FastrouteProcess, two_dialects
from tests.stub_upstream import StubUpstream
from tests.test_key_limits import within_one_minute

ADMIN = "fr-admin-token-keys-5550123"
ENV = {"FR_KEYS_ADMIN": ADMIN}
USER = [{"role": "user", "content": "hello"}]
#: USD per million tokens: prompt, completion
GPT_PRICE = (1000, 2000)
CLAUDE_PRICE = (3000, 4000)


def config(stub: StubUpstream, tmp: Path, extra: str = "") -> str:
    return f"""
[admin]
token_env = "FR_KEYS_ADMIN"

[storage]
path = "{tmp / 'state.sqlite3'}"

[audit]
path = "{tmp / 'audit.sqlite3'}"

[pricing."gpt-keyed"]
prompt_cost_per_million = {GPT_PRICE[0]}.0
completion_cost_per_million = {GPT_PRICE[1]}.0

[pricing."claude-keyed"]
prompt_cost_per_million = {CLAUDE_PRICE[0]}.0
completion_cost_per_million = {CLAUDE_PRICE[1]}.0
{extra}
{two_dialects(stub)}"""


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[Path]:
    stub = StubUpstream().start()
    path = tmp_path / "c.toml"
    path.write_text(config(stub, tmp_path))
    yield path
    stub.stop()


def cli(proc: FastrouteProcess, *args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if token is not None:
        env["FASTROUTE_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "fastroute", *args, "--url", proc.url], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, check=False)


def admin(proc: FastrouteProcess, method: str, path: str, body: Any = None, token: str | None = ADMIN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{proc.url}{path}", json=body, headers=headers, timeout=30)


def post(proc: FastrouteProcess, key: str | None, model: str = "gpt-keyed") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{proc.url}/v1/chat/completions", json={"model": model, "messages": USER}, headers=headers,
                      timeout=30)


def logs_until(proc: FastrouteProcess, count: int, key: str) -> list[dict[str, Any]]:
    """The audit log's records of ``key``, once ``count`` are there (the log writes off the request path)."""
    deadline = time.monotonic() + 10
    while True:
        data = httpx.get(f"{proc.url}/v1/admin/logs", params={"key": key},
                         headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def created_secret(out: str) -> str:
    lines = out.strip().splitlines()
    assert lines[-2].startswith("secret (shown this once"), out
    assert lines[-1].startswith("fr-") and len(lines[-1]) == 46, out
    return lines[-1]


def cost(record: dict[str, Any]) -> int:
    price = GPT_PRICE if record["model"] == "gpt-keyed" else CLAUDE_PRICE
    return record["prompt_tokens"] * price[0] + record["completion_tokens"] * price[1]


def test_a_key_made_with_the_cli_is_served_counted_limited_and_kept(conf: Path) -> None:
    within_one_minute()
    proc = FastrouteProcess([str(conf), "--workers", "2"], env=ENV, workers=2).start()
    try:
        made = cli(proc, "keys", "create", "bob", "--rpm", "6", "--models", "gpt-*", "claude-*",
                   "--metadata", "team=search")
        assert made.returncode == 0, made.stderr
        assert "created key 'bob': models gpt-* claude-*; rate limit 6 req/min; budget none" in made.stdout
        secret = created_secret(made.stdout)

        oai = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=secret, max_retries=0)
        assert oai.chat.completions.create(model="gpt-keyed", messages=USER).choices[0].message.content
        assert list(oai.chat.completions.create(model="gpt-keyed", messages=USER, stream=True))
        ant = anthropic.Anthropic(base_url=proc.url, api_key=secret, max_retries=0)
        assert ant.messages.create(model="claude-keyed", max_tokens=16, messages=USER).content
        with ant.messages.stream(model="claude-keyed", max_tokens=16, messages=USER) as stream:
            assert "".join(stream.text_stream)
        with pytest.raises(openai.PermissionDeniedError):  # its models are gpt-* and claude-*
            oai.chat.completions.create(model="o1-other", messages=USER)

        records = logs_until(proc, 5, key="bob")
        assert len(records) == 5
        served = [r for r in records if r["status"] == 200]
        assert sorted((r["model"], r["stream"]) for r in served) == [
            ("claude-keyed", False), ("claude-keyed", True), ("gpt-keyed", False), ("gpt-keyed", True)]
        for r in served:
            assert r["cost_micros"] == cost(r) > 0
        usage = cli(proc, "usage", "--key", "bob", "--by", "model")
        assert usage.returncode == 0, usage.stderr
        rows = {line.split()[0]: line.split() for line in usage.stdout.splitlines()[1:]}
        for model in ("gpt-keyed", "claude-keyed"):
            mine = [r for r in served if r["model"] == model]
            assert rows[model][1] == "2"
            assert rows[model][5] == f"{sum(r['cost_micros'] for r in mine) / 1e6:.6f}"
        assert rows["total"][1] == "5"

        # six a minute: four taken (a model the key may not use is refused before it is counted)
        assert [post(proc, secret).status_code for _ in range(2)] == [200, 200]
        refused = post(proc, secret)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        assert "key 'bob' reached its limit of requests" in refused.json()["error"]["message"]
        budget = httpx.get(f"{proc.url}/v1/budget", headers={"authorization": f"Bearer {secret}"}).json()
        assert budget["key"] == "bob" and budget["budget"] is None
        assert budget["rate_limit"]["requests_per_minute"] == 6 and budget["rate_limit"]["requests_in_window"] >= 6
        mine = httpx.get(f"{proc.url}/v1/usage", params={"group_by": "model"},
                         headers={"authorization": f"Bearer {secret}"}).json()
        assert mine["key"] == "bob" and sum(row["requests"] for row in mine["data"]) >= 6

        cheap = cli(proc, "keys", "create", "cheap", "--budget", "0.000001", "--period", "day")
        assert cheap.returncode == 0, cheap.stderr
        cheap_secret = created_secret(cheap.stdout)
        assert post(proc, cheap_secret).status_code == 200  # it spends far more than its budget
        statuses = [post(proc, cheap_secret).status_code for _ in range(20)]
        assert 429 in statuses
        over = post(proc, cheap_secret)
        assert over.status_code == 429 and "key 'cheap' reached its budget" in over.json()["error"]["message"]
        spent = httpx.get(f"{proc.url}/v1/budget", headers={"authorization": f"Bearer {cheap_secret}"}).json()["budget"]
        assert spent["usd"] == 0.000001 and spent["spent_usd"] > spent["usd"] and spent["remaining_usd"] == 0
        assert spent["period"] == "day" and spent["period_end"].endswith("T00:00:00Z")
    finally:
        assert proc.stop() == 0
    for secret_shown in (secret, cheap_secret):
        assert secret_shown not in proc.output
    again = FastrouteProcess([str(conf)], env=ENV).start()  # the keys and this minute's counts are in the files
    try:
        assert post(again, secret).status_code == 429
        assert post(again, cheap_secret).status_code == 429
        assert post(again, "fr-not-a-key").status_code == 401
        listed = cli(again, "keys", "list")
        assert listed.returncode == 0 and listed.stdout.split("\n")[1].split()[:2] == ["bob", "admin"]
        assert secret not in listed.stdout and cheap_secret not in listed.stdout
    finally:
        again.stop()


def test_changes_reach_every_worker_at_once(conf: Path) -> None:
    proc = FastrouteProcess([str(conf), "--workers", "2"], env=ENV, workers=2).start()
    try:
        made = admin(proc, "POST", "/v1/admin/keys", {"name": "carol"})
        assert made.status_code == 201
        secret = made.json()["key"]
        # each call a new connection: the two workers take them as they come
        assert {post(proc, secret).status_code for _ in range(12)} == {200}
        narrowed = admin(proc, "PATCH", "/v1/admin/keys/carol", {"models": ["claude-*"]})
        assert narrowed.status_code == 200 and narrowed.json()["models"] == ["claude-*"] and "key" not in narrowed.json()
        assert {post(proc, secret).status_code for _ in range(12)} == {403}
        assert {post(proc, secret, "claude-keyed").status_code for _ in range(12)} == {200}
        rotated = admin(proc, "PATCH", "/v1/admin/keys/carol", {"rotate": True})
        new_secret = rotated.json()["key"]
        assert new_secret != secret
        assert {post(proc, secret, "claude-keyed").status_code for _ in range(12)} == {401}
        assert {post(proc, new_secret, "claude-keyed").status_code for _ in range(12)} == {200}
        assert admin(proc, "DELETE", "/v1/admin/keys/carol").json() == {"object": "key", "name": "carol",
                                                                          "deleted": True}
        assert {post(proc, new_secret, "claude-keyed").status_code for _ in range(12)} == {401}
        # no key left: nobody may call (revoking the last key does not open the server)
        assert {post(proc, None).status_code for _ in range(12)} == {401}
    finally:
        proc.stop()


def test_the_admin_api_checks_what_it_is_given_and_never_shows_a_secret(tmp_path: Path) -> None:
    stub = StubUpstream().start()
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, tmp_path, '\n[[keys]]\nname = "fixed"\nkey_env = "FR_KEYS_FIXED"\n'))
    env = {**ENV, "FR_KEYS_FIXED": "sk-fixed-key-000111"}
    proc = FastrouteProcess([str(conf)], env=env).start()
    try:
        assert admin(proc, "GET", "/v1/admin/keys", token=None).status_code == 401
        assert admin(proc, "POST", "/v1/admin/keys", {"name": "x"}, token="sk-fixed-key-000111").status_code == 401
        for body, param in (
            ({"name": "bad name"}, "name"), ({}, "name"), ({"name": "n", "colour": "red"}, "colour"),
            ({"name": "n", "rate_limit": {"requests_per_minute": 0}}, "rate_limit.requests_per_minute"),
            ({"name": "n", "rate_limit": {"requests_per_minte": 5}}, "rate_limit.requests_per_minte"),
            ({"name": "n", "budget": {"usd": -1}}, "budget.usd"),
            ({"name": "n", "budget": {"usd": 1, "period": "year"}}, "budget.period"),
            ({"name": "n", "models": []}, "models"), ({"name": "n", "models": "gpt-*"}, "models"),
            ({"name": "n", "key_sha256": "abc"}, "key_sha256"),
        ):
            answer = admin(proc, "POST", "/v1/admin/keys", body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"]["param"] == param, (body, answer.text)
        assert admin(proc, "POST", "/v1/admin/keys", [1, 2]).status_code == 400
        taken = admin(proc, "POST", "/v1/admin/keys", {"name": "fixed"})
        assert taken.status_code == 409 and "defined in the config" in taken.json()["error"]["message"]
        assert admin(proc, "DELETE", "/v1/admin/keys/fixed").status_code == 409
        assert admin(proc, "PATCH", "/v1/admin/keys/fixed", {"models": ["x"]}).status_code == 409
        assert admin(proc, "GET", "/v1/admin/keys/nobody").status_code == 404
        assert admin(proc, "DELETE", "/v1/admin/keys/nobody").status_code == 404

        own = "my-own-secret-0123456789"
        import hashlib

        brought = admin(proc, "POST", "/v1/admin/keys", {"name": "own", "key_sha256": hashlib.sha256(own.encode()).hexdigest()})
        assert brought.status_code == 201 and "key" not in brought.json()  # its holder has the secret
        assert post(proc, own).status_code == 200
        made = admin(proc, "POST", "/v1/admin/keys", {"name": "dora", "budget": {"usd": 5}, "metadata": {"team": "a"}})
        secret = made.json()["key"]
        assert admin(proc, "POST", "/v1/admin/keys", {"name": "dora"}).status_code == 409
        again = admin(proc, "PATCH", "/v1/admin/keys/dora", {"budget": None, "rate_limit": {"requests_per_minute": 9}})
        assert again.json()["budget"] is None and again.json()["rate_limit"]["requests_per_minute"] == 9
        assert admin(proc, "PATCH", "/v1/admin/keys/dora", {"models": None}).status_code == 400
        assert admin(proc, "PATCH", "/v1/admin/keys/dora", {"name": "eve"}).json()["error"]["param"] == "name"
        assert post(proc, secret).status_code == 200
        listed = admin(proc, "GET", "/v1/admin/keys").json()["data"]
        assert [(k["name"], k["source"]) for k in listed] == [("dora", "admin"), ("fixed", "config"), ("own", "admin")]
        shown = admin(proc, "GET", "/v1/admin/keys").text + admin(proc, "GET", "/v1/admin/keys/dora").text
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for hidden in (secret, digest, own, "sk-fixed-key-000111"):
            assert hidden not in shown
        logs = admin(proc, "GET", "/v1/admin/logs").text
        assert secret not in logs and digest not in logs
        # a holder's own view: their key, nothing of the others'
        assert httpx.get(f"{proc.url}/v1/budget").status_code == 401
        view = httpx.get(f"{proc.url}/v1/budget", headers={"authorization": f"Bearer {secret}"}).json()
        assert view["key"] == "dora" and view["budget"] is None and view["rate_limit"]["requests_per_minute"] == 9
    finally:
        proc.stop()
        stub.stop()
    assert secret not in proc.output and own not in proc.output
    off = FastrouteProcess([str(conf)], env={"FR_KEYS_FIXED": "sk-fixed-key-000111"}).start()
    try:  # the admin API off: no keys of its own, and the config's still work
        assert admin(off, "GET", "/v1/admin/keys").status_code == 404
        assert post(off, secret).status_code == 401
    finally:
        off.stop()
