"""Virtual keys (``[[keys]]``): every inference and model-listing endpoint asks for one, in each
client's own dialect (401 for a missing or wrong key, 403 for a model the key may not use), and
records carry the key's name, never its secret.  Through a real fastroute and the official SDKs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from fastroute.config import config_from_dict
from fastroute.errors import ConfigError
from fastroute.governance.keys import KeyRing
from tests.conftest import FastrouteProcess, two_dialects
from tests.stub_upstream import StubUpstream

ALICE = "sk-fr-alice-0123456789abcdef"
BOB = "sk-fr-bob-fedcba9876543210"
SERVER = "sk-fr-shared-server-key-42"
USER = [{"role": "user", "content": "hello"}]


def config(stub: StubUpstream, log: Path) -> str:
    bob_sha = hashlib.sha256(BOB.encode()).hexdigest()
    return f"""
[server]
api_key_env = "FR_TEST_SERVER_KEY"

[logging]
enabled = true
path = "{log}"

[[keys]]
name = "alice"
key_env = "FR_TEST_ALICE_KEY"
models = ["gpt-*", "claude-*"]

[[keys]]
name = "bob"
key_sha256 = "{bob_sha}"
models = ["gpt-4o-mini"]

{two_dialects(stub)}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastrouteProcess, Path]]:
    tmp = tmp_path_factory.mktemp("keys")
    stub = StubUpstream().start()
    log = tmp / "requests.jsonl"
    conf = tmp / "c.toml"
    conf.write_text(config(stub, log))
    proc = FastrouteProcess([str(conf)], env={"FR_TEST_ALICE_KEY": ALICE, "FR_TEST_SERVER_KEY": SERVER}).start()
    yield proc, log
    proc.stop()
    stub.stop()


def oai(proc: FastrouteProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0)


def ant(proc: FastrouteProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proc.url, api_key=key, max_retries=0)


@pytest.mark.parametrize("key", [ALICE, BOB, SERVER], ids=["key_env", "key_sha256", "server"])
def test_each_kind_of_key_is_accepted(served: tuple[FastrouteProcess, Path], key: str) -> None:
    proc, _ = served
    answer = oai(proc, key).chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert answer.choices[0].message.content
    chunks = list(oai(proc, key).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_wrong_or_missing_key_is_401_in_each_dialect(served: tuple[FastrouteProcess, Path]) -> None:
    proc, _ = served
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        oai(proc, ALICE + "x").chat.completions.create(model="gpt-4o-mini", messages=USER)
    missing = httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER})
    assert missing.status_code == 401 and missing.json()["error"]["message"].startswith("missing API key")
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ant(proc, "sk-nobody").messages.create(model="claude-x", max_tokens=16, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"
    ollama = httpx.post(f"{proc.url}/api/chat", json={"model": "gpt-4o-mini", "messages": USER, "stream": False},
                        headers={"authorization": "Bearer sk-nobody"})
    assert ollama.status_code == 401 and "invalid API key" in ollama.json()["error"]
    for path in ("/v1/models", "/api/tags"):
        assert httpx.get(f"{proc.url}{path}").status_code == 401, path
        assert httpx.get(f"{proc.url}{path}", headers={"authorization": f"Bearer {BOB}"}).status_code == 200, path


def test_a_model_the_key_may_not_use_is_403(served: tuple[FastrouteProcess, Path]) -> None:
    proc, _ = served
    with pytest.raises(openai.PermissionDeniedError, match="key 'bob' may not use model 'gpt-4o'"):
        oai(proc, BOB).chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        ant(proc, BOB).messages.create(model="claude-x", max_tokens=16, messages=USER)
    assert caught.value.body["error"]["type"] == "permission_error"
    answer = ant(proc, ALICE).messages.create(model="claude-x", max_tokens=16, messages=USER)
    assert answer.content[0].text
    with ant(proc, ALICE).messages.stream(model="claude-x", max_tokens=16, messages=USER) as stream:
        assert "".join(stream.text_stream)


def test_records_name_the_key_and_never_hold_it(served: tuple[FastrouteProcess, Path]) -> None:
    proc, log = served
    oai(proc, ALICE).chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.PermissionDeniedError):
        oai(proc, BOB).chat.completions.create(model="gpt-4o", messages=USER)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (log.exists() and "bob" in log.read_text()):
        time.sleep(0.05)
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert {"alice", "bob"} <= {e["key_name"] for e in entries}
    assert next(e for e in reversed(entries) if e["key_name"] == "bob")["status"] == 403
    for secret in (ALICE, BOB, SERVER):
        assert secret not in text and secret not in proc.output


def test_keys_in_config() -> None:
    def check(keys: list[dict], problem: str) -> None:
        with pytest.raises(ConfigError, match=problem):
            config_from_dict({"keys": keys})

    check([{"name": "a"}], r"keys\[0\]: needs exactly one of key_env")
    check([{"name": "a", "key_sha256": "00"}], r"keys\[0\].key_sha256: must be 64 hex digits")
    check([{"name": "a", "key_env": "A"}, {"name": "a", "key_env": "B"}], r"keys\[1\].name: duplicate key name 'a'")
    check([{"name": "a", "key_env": "A", "budget": {"usd": 1, "period": "year"}}],
          r"keys\[0\].budget.period: must be one of 'day', 'week', 'month', 'total'")
    check([{"name": "a", "key_env": "A", "rate_limit": {"requests_per_minute": 0}}],
          r"keys\[0\].rate_limit.requests_per_minute: must be at least 1")
    with pytest.raises(ConfigError, match=r"providers\[0\].forward_client_key: cannot be true while \[\[keys\]\]"):
        config_from_dict({"keys": [{"name": "a", "key_env": "A"}],
                          "providers": [{"name": "p", "format": "openai", "base_url": "http://h/v1",
                                         "forward_client_key": True}]})


def test_the_ring_finds_by_digest_and_globs_models() -> None:
    cfg = config_from_dict({"keys": [{"name": "a", "key_env": "K", "models": ["gpt-4o*", "o[13]-mini"]}]})
    ring = KeyRing.from_config(cfg, {"K": "secret-a"})
    assert ring.required and ring.find("secret-b") is None and ring.find(None) is None
    key = ring.find("secret-a")
    assert key is not None and key.name == "a"
    assert key.allows("gpt-4o") and key.allows("gpt-4o-mini") and key.allows("o1-mini")
    assert not key.allows("o2-mini") and not key.allows("GPT-4o") and not key.allows("x-gpt-4o")
    assert not KeyRing.from_config(config_from_dict({})).required  # no keys: anyone may call


def test_a_key_sees_and_asks_only_for_its_models(stub: StubUpstream, tmp_path: Path) -> None:
    """The model lists, one model, counting tokens, explaining a route and Ollama's show: what a
    key may not ask for, it may neither see nor count nor explain."""
    conf = tmp_path / "c.toml"
    conf.write_text(f"""
[[keys]]
name = "narrow"
key_env = "FR_NARROW_KEY"
models = ["claude-*"]

{two_dialects(stub, openai_prefix="gpt-")}
[[routers]]
type = "prefix"
model_prefix = "gpt-listed"
provider = "stub-openai"

[[routers]]
type = "prefix"
model_prefix = "claude-listed"
provider = "stub-anthropic"
""")
    secret = "sk-fr-narrow-0123456789"
    proc = FastrouteProcess([str(conf)], env={"FR_NARROW_KEY": secret}).start()
    auth = {"authorization": f"Bearer {secret}"}
    try:
        listed = httpx.get(f"{proc.url}/v1/models", headers=auth).json()["data"]
        assert [m["id"] for m in listed] == ["claude-listed"]
        assert all(m["name"].startswith("claude-") for m in httpx.get(f"{proc.url}/api/tags", headers=auth).json()["models"])
        assert httpx.get(f"{proc.url}/v1/models/gpt-listed", headers=auth).status_code == 404
        counted = httpx.post(f"{proc.url}/v1/messages/count_tokens", headers={**auth, "anthropic-version": "2023-06-01"},
                             json={"model": "gpt-listed", "messages": [{"role": "user", "content": "hi"}]})
        assert counted.status_code == 403 and counted.json()["error"]["type"] == "permission_error"
        explained = httpx.post(f"{proc.url}/v1/route", headers=auth,
                               json={"model": "gpt-listed", "messages": [{"role": "user", "content": "hi"}]})
        assert explained.status_code == 403
        assert httpx.post(f"{proc.url}/api/show", headers=auth, json={"model": "gpt-listed"}).status_code == 403
        allowed = httpx.post(f"{proc.url}/v1/route", headers=auth,
                             json={"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]})
        assert allowed.status_code == 200 and allowed.json()["route"]["provider"] == "stub-anthropic"
    finally:
        proc.stop()
