"""Who sees which events: where client keys are required, a key's holder sees the requests made
with that key (their prompts and answers), nobody else's; the admin token sees every request;
without keys, everyone sees everything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FastrouteProcess, two_dialects
from tests.stub_upstream import StubUpstream
from tests.test_recording import Feed

ALICE, BOB, ADMIN = "sk-fr-scope-alice-000111", "sk-fr-scope-bob-000222", "fr-scope-admin-000333"
ENV = {"FR_SCOPE_ALICE": ALICE, "FR_SCOPE_BOB": BOB, "FR_SCOPE_ADMIN": ADMIN}


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[FastrouteProcess]:
    stub = StubUpstream().start()
    conf = tmp_path / "c.toml"
    conf.write_text(f"""
[admin]
token_env = "FR_SCOPE_ADMIN"

[[keys]]
name = "alice"
key_env = "FR_SCOPE_ALICE"

[[keys]]
name = "bob"
key_env = "FR_SCOPE_BOB"

{two_dialects(stub)}""")
    server = FastrouteProcess([str(conf)], env=ENV).start()
    yield server
    server.stop()
    stub.stop()


def chat(proc: FastrouteProcess, key: str, text: str) -> str:
    resp = httpx.post(f"{proc.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-x", "messages": [{"role": "user", "content": text}]})
    assert resp.status_code == 200
    return resp.headers["x-request-id"]


def ids(feed: Feed) -> set[str]:
    return {e["id"] for e in feed.events if "id" in e}


def test_a_key_sees_its_own_requests_and_the_admin_token_all(proc: FastrouteProcess) -> None:
    before = chat(proc, BOB, "bob's secret plan")  # in the history a new viewer gets
    alice, admin = Feed(proc.url, ALICE), Feed(proc.url, ADMIN)
    mine = [chat(proc, ALICE, "alice asks") for _ in range(3)]
    theirs = [chat(proc, BOB, "bob's other secret") for _ in range(3)]
    admin.wait(lambda evs: {*mine, *theirs, before} <= {e.get("id") for e in evs if e.get("type") == "complete"})
    alice.wait(lambda evs: set(mine) <= {e.get("id") for e in evs if e.get("type") == "complete"})
    time.sleep(0.3)  # anything of bob's would have reached alice's feed by now
    assert ids(alice) == set(mine)
    kinds = [e["type"] for e in alice.events if e["id"] == mine[0]]
    assert kinds == ["start", "classified", "routed", "complete"]
    assert "secret" not in str(alice.events)
    assert {*mine, *theirs, before} <= ids(admin)
    assert all(e["key_name"] in ("alice", "bob") for e in admin.events if e["type"] in ("start", "complete"))
    refused = httpx.get(f"{proc.url}/dashboard/events", headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401
