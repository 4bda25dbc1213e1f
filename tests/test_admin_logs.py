"""The audit log through a real fastroute: every request (streams and refusals included) is one
record with its key's name, session, tokens and cost, read back from ``GET /v1/admin/logs`` and
``GET /v1/admin/usage`` behind the admin token, after a restart too (SQLite), with two workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FastrouteProcess, two_dialects
from tests.stub_upstream import StubUpstream

ALICE = "sk-fr-audit-alice-0123456789"
ADMIN = "fr-admin-token-9876543210"
USER = [{"role": "user", "content": "hello"}]
ENV = {"FR_AUDIT_ALICE": ALICE, "FR_AUDIT_ADMIN": ADMIN}


def config(stub: StubUpstream, audit: Path) -> str:
    return f"""
[admin]
token_env = "FR_AUDIT_ADMIN"

[audit]
path = "{audit}"

[[keys]]
name = "alice"
key_env = "FR_AUDIT_ALICE"
models = ["gpt-*", "claude-*"]

[pricing."gpt-audit"]
prompt_cost_per_million = 1000.0
completion_cost_per_million = 2000.0

{two_dialects(stub, openai_prefix="gpt-")}"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[StubUpstream, Path]]:
    stub = StubUpstream().start()
    conf = tmp_path / "c.toml"
    conf.write_text(config(stub, tmp_path / "audit.sqlite3"))
    yield stub, conf
    stub.stop()


def admin_get(proc: FastrouteProcess, path: str, token: str | None = ADMIN, **params: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{proc.url}{path}", params=params, headers=headers)


def logs_until(proc: FastrouteProcess, count: int, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        data = admin_get(proc, "/v1/admin/logs", **params).json()["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def calls(proc: FastrouteProcess) -> None:
    oai = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=ALICE, max_retries=0,
                        default_headers={"x-claude-code-session-id": "sess-1"})
    oai.chat.completions.create(model="gpt-audit", messages=USER)
    list(oai.chat.completions.create(model="gpt-audit", messages=USER, stream=True))
    ant = anthropic.Anthropic(base_url=proc.url, api_key=ALICE, max_retries=0)
    ant.messages.create(model="claude-x", max_tokens=16, messages=USER, metadata={"user_id": "u_1_session_sess-2"})
    with ant.messages.stream(model="claude-x", max_tokens=16, messages=USER) as stream:
        "".join(stream.text_stream)
    with pytest.raises(openai.PermissionDeniedError):  # a model the key may not use: refused, and recorded
        openai.OpenAI(base_url=f"{proc.url}/v1", api_key=ALICE, max_retries=0).chat.completions.create(
            model="o1-refused", messages=USER)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_is_in_the_audit_log_with_its_cost(setup: tuple[StubUpstream, Path], workers: int) -> None:
    _, conf = setup
    proc = FastrouteProcess([str(conf), "--workers", str(workers)], env=ENV, workers=workers).start()
    try:
        for _ in range(2):
            calls(proc)
        data = logs_until(proc, 10, key="alice")
        assert len(data) == 10 and all(r["key_name"] == "alice" for r in data)
        assert [r["timestamp"] for r in data] == sorted((r["timestamp"] for r in data), reverse=True)
        gpt = [r for r in data if r["model"] == "gpt-audit"]
        assert len(gpt) == 4 and {r["stream"] for r in gpt} == {True, False}
        for r in gpt:  # priced by the config: 1000 / 2000 USD per million tokens
            assert r["cost_micros"] == r["prompt_tokens"] * 1000 + r["completion_tokens"] * 2000 > 0
            assert r["session"] == "sess-1" and r["status"] == 200 and r["latency_ms"] > 0
        sessions = {r["session"] for r in data if r["model"] == "claude-x"}
        assert "sess-2" in sessions
        refused = [r for r in data if r["model"] == "o1-refused"]
        assert len(refused) == 2 and all(r["status"] == 403 and r["error"] for r in refused)
        assert [r["model"] for r in admin_get(proc, "/v1/admin/logs", model="claude-x", limit=3).json()["data"]] \
            == ["claude-x"] * 3
        usage = admin_get(proc, "/v1/admin/usage", group_by="key").json()["data"]
        assert usage[0]["key"] == "alice" and usage[0]["requests"] == 10
        assert usage[0]["cost_micros"] >= sum(r["cost_micros"] for r in gpt)
        by_session = {row["session"]: row for row in admin_get(proc, "/v1/admin/usage", group_by="session").json()["data"]}
        assert by_session["sess-1"]["requests"] == 4
    finally:
        assert proc.stop() == 0
    if workers == 1:  # SQLite: after a restart every record is still there
        again = FastrouteProcess([str(conf)], env=ENV).start()
        try:
            assert len(logs_until(again, 10, key="alice")) == 10
        finally:
            again.stop()


def test_the_admin_api_asks_for_its_own_token(setup: tuple[StubUpstream, Path]) -> None:
    _, conf = setup
    proc = FastrouteProcess([str(conf)], env=ENV).start()
    try:
        assert admin_get(proc, "/v1/admin/logs", token=None).status_code == 401
        assert admin_get(proc, "/v1/admin/logs", token=ALICE).status_code == 401  # a client key is no admin token
        assert admin_get(proc, "/v1/admin/logs", token="nope").status_code == 401
        bad = admin_get(proc, "/v1/admin/usage", group_by="planet")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        assert admin_get(proc, "/v1/admin/logs", since="yesterday").status_code == 400
        assert admin_get(proc, "/v1/admin/logs", limit="5000").status_code == 400
        refused = httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "gpt-audit", "messages": USER},
                             headers={"authorization": f"Bearer {ADMIN}"})
        assert refused.status_code == 401  # and the admin token is no client key
    finally:
        proc.stop()
    off = FastrouteProcess([str(conf)], env={"FR_AUDIT_ALICE": ALICE}).start()  # token_env unset: off
    try:
        assert admin_get(off, "/v1/admin/logs").status_code == 404
    finally:
        off.stop()
