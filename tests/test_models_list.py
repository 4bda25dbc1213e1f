"""``GET /v1/models``, ``GET /v1/models/{id}`` and ``GET /api/tags``: every model a client can ask
for, through a real fastroute, read by the official SDKs (OpenAI, Anthropic, Ollama)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from aiohttp import web

from fastroute.routing.catalogue import is_whole_name
from tests.conftest import FastrouteProcess
from tests.stub_upstream import StubUpstream

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


@dataclass
class ChangingOllama(StubUpstream):
    """An Ollama whose pulled models the test changes (the shared stub's are fixed)."""

    names: list[str] = field(default_factory=lambda: ["llama-a:8b", "qwen-coder:7b"])

    async def _tags(self, request: web.Request) -> web.Response:
        self.tag_calls += 1
        return web.json_response({"models": [{"name": n, "model": n, "details": {"family": "llama"}}
                                             for n in self.names]})

    async def _show(self, request: web.Request) -> web.Response:
        return web.json_response({"capabilities": ["completion", "tools"], "details": {"family": "llama"}})


@pytest.fixture(scope="module")
def local() -> Iterator[ChangingOllama]:
    upstream = ChangingOllama().start()
    yield upstream
    upstream.stop()


CATALOGUED = """
[discovery]
interval_s = 0.2
timeout_s = 2

[[providers]]
name = "echo"
format = "echo"
models = ["echo", "echo-two", "team/echo-x"]

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub}"
models = ["stub-model"]
capabilities = ["tools", "vision"]

[[providers]]
name = "local"
format = "ollama"
base_url = "{local}"

[[providers]]
name = "claude"
format = "anthropic"
base_url = "{stub}"

[[routers]]
type = "discover"
provider = "local"

[[routers]]
type = "tag"
tag = "code"
provider = "echo"
rewrite_model = "coder-9000"        # nothing routes this name: a request for it would get 400

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "team/"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "gpt-4o"
provider = "stub"
fallback_models = ["stub-backup"]

[[routers]]
type = "prefix"
model_prefix = "gpt-"
provider = "stub"

[[routers]]
type = "prefix"
model_prefix = "claude-"
provider = "claude"

[[routers]]
type = "prefix"
model_prefix = "alias"
provider = "stub"
rewrite_model = "stub-rewritten"

[[routers]]
type = "prefix"
model_prefix = "qwen2.5:"
provider = "local"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"

[[routers]]
type = "prefix"
model_prefix = "sonnet"
provider = "claude"
rewrite_model = "claude-sonnet-4-5"
"""

#: what that config lists, in order, with the provider that serves each
EXPECTED = {
    "echo": "echo", "echo-two": "echo", "team/echo-x": "echo",  # declared
    "stub-model": "stub",
    "llama-a:8b": "local", "qwen-coder:7b": "local",  # discovered
    "gpt-4o": "stub", "stub-backup": "stub",  # a whole-name prefix, its fallback model
    "alias": "stub", "stub-rewritten": "stub",  # a whole-name prefix, its rewrite target
    "stub": "stub",
    "sonnet": "claude", "claude-sonnet-4-5": "claude",  # the rewrite routes through the claude- family
}


@pytest.fixture(scope="module")
def catalogued(stub: StubUpstream, local: ChangingOllama,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    conf = tmp_path_factory.mktemp("models") / "models.toml"
    conf.write_text(CATALOGUED.format(stub=stub.base_url, local=f"http://{local.host}:{local.port}"))
    proc = FastrouteProcess([str(conf)]).start()
    yield proc
    proc.stop()


def gpt(proc: FastrouteProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key="x", max_retries=0, timeout=30)


def claude(proc: FastrouteProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proc.url, api_key="x", max_retries=0, timeout=30)


def listed(proc: FastrouteProcess) -> dict[str, str]:
    return {m.id: m.owned_by for m in gpt(proc).models.list()}


# ── what is listed ────────────────────────────────────────────────────────

def test_every_source_once_with_the_provider_that_serves_it(catalogued: FastrouteProcess) -> None:
    models = list(gpt(catalogued).models.list())
    assert [m.id for m in models] == list(EXPECTED)  # no repeats: echo is declared and a prefix
    assert {m.id: m.owned_by for m in models} == EXPECTED
    # families (claude-, gpt-, team/, qwen2.5:) and a rewrite nothing routes (coder-9000) are not offered
    by_id = {m.id: m.model_dump() for m in models}
    assert by_id["stub-model"]["capabilities"] == ["tools", "vision"]  # declared
    assert by_id["gpt-4o"]["capabilities"] == ["tools", "vision"]  # what serves it can
    assert "tools" in by_id["llama-a:8b"]["capabilities"]  # discovered
    assert "capabilities" not in by_id["sonnet"]  # nobody said


def test_every_listed_model_answers(catalogued: FastrouteProcess) -> None:
    client = gpt(catalogued)
    for model, provider in EXPECTED.items():
        if provider == "echo":
            out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert out.choices[0].message.content == "hi"
        route = httpx.post(f"{catalogued.url}/v1/route",
                           json={"model": model, "messages": [{"role": "user", "content": "hi"}]}).json()
        assert route["route"]["provider"] == provider, (model, route)


def test_ollama_tags_lists_the_same(catalogued: FastrouteProcess) -> None:
    tags = ollama.Client(host=catalogued.url, timeout=30).list().models
    assert [m.model for m in tags] == list(EXPECTED)
    assert {m.model: m.details.family for m in tags} == EXPECTED


def test_a_config_of_prefix_rules_alone_lists_their_models(stub: StubUpstream, tmp_path: Path) -> None:
    # nobody declares a model: the list comes from the rules (it used to be empty but for echo)
    conf = tmp_path / "prefixes.toml"
    conf.write_text(f"""
[[providers]]
name = "local"
format = "openai"
base_url = "{stub.base_url}"

[[routers]]
type = "prefix"
model_prefix = "llama3.1"
provider = "local"

[[routers]]
type = "prefix"
model_prefix = "qwen2.5-coder:"
provider = "local"

[[routers]]
type = "prefix"
model_prefix = "gpt-"
provider = "local"
rewrite_model = "gpt-oss-20b"
""")
    proc = FastrouteProcess([str(conf)]).start()
    try:
        assert listed(proc) == {"llama3.1": "local", "gpt-oss-20b": "local"}
        assert [m.model for m in ollama.Client(host=proc.url).list().models] == ["llama3.1", "gpt-oss-20b"]
    finally:
        proc.stop()


def test_random_candidates_are_listed_and_the_owner_holds_still(stub: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "random.toml"
    conf.write_text(f"""
[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"

[[routers]]
type = "random"
candidates = [{{ provider = "stub", model = "stub-model" }}, {{ provider = "echo", model = "echo-b" }}]
""")
    proc = FastrouteProcess([str(conf)]).start()
    try:
        # echo-b routes through the echo prefix; stub-model is the random rule's, owned by its candidate
        for _ in range(8):  # the random rule picks anew each time; the list does not
            assert listed(proc) == {"echo": "echo", "stub-model": "stub", "echo-b": "echo"}
        # the random rule takes any name, so any name is one a client can ask for
        assert gpt(proc).models.retrieve("anything-at-all").owned_by == "stub"
    finally:
        proc.stop()


def test_discovery_changes_show_at_once(catalogued: FastrouteProcess, local: ChangingOllama) -> None:
    before = local.names
    local.names = ["llama-a:8b", "mistral-new:7b"]
    try:
        assert local.wait_for(lambda: "mistral-new:7b" in listed(catalogued), timeout=15), listed(catalogued)
        now = listed(catalogued)
        assert now["mistral-new:7b"] == "local" and "qwen-coder:7b" not in now
        assert "mistral-new:7b" in {m.model for m in ollama.Client(host=catalogued.url).list().models}
    finally:
        local.names = before
        assert local.wait_for(lambda: listed(catalogued) == EXPECTED, timeout=15)


# ── one model ─────────────────────────────────────────────────────────────

def test_openai_sdk_retrieves_one_model(catalogued: FastrouteProcess) -> None:
    client = gpt(catalogued)
    one = client.models.retrieve("team/echo-x")  # a slash in the id: the SDK sends it as %2F
    assert (one.id, one.owned_by, one.object) == ("team/echo-x", "echo", "model")
    assert client.models.retrieve("gpt-4o-mini").owned_by == "stub"  # routed by the gpt- family, not listed
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nobody-serves-this")
    error = info.value.body
    assert error["code"] == "model_not_found" and "nobody-serves-this" in error["message"]


def test_anthropic_sdk_lists_and_retrieves(catalogued: FastrouteProcess) -> None:
    client = claude(catalogued)
    assert [m.id for m in client.models.list()] == list(EXPECTED)
    raw = httpx.get(f"{catalogued.url}/v1/models", headers=ANTHROPIC_HEADERS).json()
    ids = list(EXPECTED)
    assert raw == {"data": [{"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
                            for m in ids],
                   "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
    one = client.models.retrieve("sonnet")
    assert (one.id, one.display_name, one.type, one.created_at.year) == ("sonnet", "sonnet", "model", 1970)
    with pytest.raises(anthropic.NotFoundError) as info:
        client.models.retrieve("nobody-serves-this")
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"


def test_anthropic_pages(catalogued: FastrouteProcess) -> None:
    ids = list(EXPECTED)
    # the SDK follows has_more / last_id from page to page
    assert [m.id for m in claude(catalogued).models.list(limit=3)] == ids
    url = f"{catalogued.url}/v1/models"
    page = httpx.get(url, params={"limit": 3, "after_id": ids[2]}, headers=ANTHROPIC_HEADERS).json()
    assert [m["id"] for m in page["data"]] == ids[3:6] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[3], ids[5])
    back = httpx.get(url, params={"limit": 2, "before_id": ids[3]}, headers=ANTHROPIC_HEADERS).json()
    assert [m["id"] for m in back["data"]] == ids[1:3] and back["has_more"] is True
    first = httpx.get(url, params={"limit": 5, "before_id": ids[2]}, headers=ANTHROPIC_HEADERS).json()
    assert [m["id"] for m in first["data"]] == ids[:2] and first["has_more"] is False
    last = httpx.get(url, params={"after_id": ids[-2]}, headers=ANTHROPIC_HEADERS).json()
    assert [m["id"] for m in last["data"]] == ids[-1:] and last["has_more"] is False
    bad = httpx.get(url, params={"limit": 0}, headers=ANTHROPIC_HEADERS)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


# ── the rule for a whole name ─────────────────────────────────────────────

@pytest.mark.parametrize(("prefix", "whole"), [
    ("echo", True), ("gpt-4o", True), ("llama3.1", True), ("qwen2.5:7b", True), ("org/model", True),
    ("", False), ("claude-", False), ("o/", False), ("qwen2.5:", False), ("gpt-4.", False), ("my_", False),
    ("model@", False), ("two words", False),
])
def test_whole_model_name(prefix: str, whole: bool) -> None:
    assert is_whole_name(prefix) is whole
