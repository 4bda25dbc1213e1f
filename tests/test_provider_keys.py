"""A provider's key goes where it was configured for, and only there.

- Model discovery sends each provider its own key, as its chat calls carry it (Ollama's ``/api/tags``
  and ``/api/show`` included), and none when it has none.
- ``forward_client_key`` beside ``[server] api_key_env`` is a config error: every client then presents
  the server's key, which would be forwarded upstream.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastroute.config import config_from_dict
from fastroute.errors import ConfigError
from fastroute.providers import build_providers
from fastroute.routing.discovery import Discovery
from tests.conftest import ROOT, FastrouteProcess, free_port
from tests.stub_dialects import OLLAMA_MODELS
from tests.stub_upstream import StubUpstream

KEY = "sk-discovery-test-key-0123456789"
KEY_ENV = "FR_DISCOVERY_TEST_KEY"
SERVER_KEY = "sk-server-key-for-the-forward-check"


@pytest.fixture(scope="module")
def own_stub() -> Iterator[StubUpstream]:
    """A stub of this module's own: no other test's background discovery reaches it."""
    upstream = StubUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def lookups(own_stub: StubUpstream) -> StubUpstream:
    own_stub.reset()
    return own_stub


def discover(provider: dict[str, object], key: str | None) -> object:
    cfg = config_from_dict({"providers": [{"name": "p", "discover": True, **provider}]})
    providers = build_providers(cfg, None)

    async def run() -> None:
        d = Discovery(cfg, providers)
        await d.refresh()
        await d.stop()

    with pytest.MonkeyPatch.context() as mp:
        if key is not None:
            mp.setenv(KEY_ENV, key)
        else:
            mp.delenv(KEY_ENV, raising=False)
        asyncio.run(run())
    return providers["p"]


def auth_of(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in ("authorization", "x-api-key")}


def test_ollama_discovery_sends_the_providers_key(lookups: StubUpstream) -> None:
    provider = discover({"format": "ollama", "base_url": f"http://{lookups.host}:{lookups.port}",
                         "api_key_env": KEY_ENV}, KEY)
    assert provider.reachable and set(OLLAMA_MODELS) <= set(provider.models())
    paths = sorted(r.path for r in lookups.lookups)
    assert paths == ["/api/show"] * len(OLLAMA_MODELS) + ["/api/tags"]
    for r in lookups.lookups:
        assert auth_of(r.headers) == {"authorization": f"Bearer {KEY}"}, r.path


def test_openai_format_discovery_sends_the_providers_key(lookups: StubUpstream) -> None:
    provider = discover({"format": "openai", "base_url": lookups.base_url, "api_key_env": KEY_ENV}, KEY)
    assert provider.reachable and provider.models() == ["stub-model"]
    [seen] = lookups.lookups
    assert seen.path == "/v1/models" and auth_of(seen.headers) == {"authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("fmt", ["ollama", "openai"])
def test_discovery_without_a_key_sends_none(lookups: StubUpstream, fmt: str) -> None:
    base = f"http://{lookups.host}:{lookups.port}" + ("/v1" if fmt == "openai" else "")
    provider = discover({"format": fmt, "base_url": base, "api_key_env": KEY_ENV}, None)
    assert provider.reachable and lookups.lookups
    assert all(auth_of(r.headers) == {} for r in lookups.lookups)


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "ollama"])
def test_discovery_carries_the_key_as_the_chat_calls_do(fmt: str) -> None:
    """One way of carrying a key per provider (``x-api-key`` for Anthropic), for chats and lookups alike."""
    cfg = config_from_dict({"providers": [{"name": "p", "format": fmt, "base_url": "http://127.0.0.1:9",
                                           "api_key_env": KEY_ENV}]})
    provider = build_providers(cfg, None)["p"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        chat, lookup = auth_of(provider.headers(None, False)), provider.own_auth_headers()
    assert chat == lookup == ({"x-api-key": KEY} if fmt == "anthropic" else {"authorization": f"Bearer {KEY}"})


def test_a_served_ollama_provider_is_discovered_with_its_key(lookups: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "discover.toml"
    conf.write_text(f'[[providers]]\nname = "local"\nformat = "ollama"\n'
                    f'base_url = "http://{lookups.host}:{lookups.port}"\napi_key_env = "{KEY_ENV}"\n'
                    'discover = true\n')
    proc = FastrouteProcess([str(conf)], env={KEY_ENV: KEY}).start()  # the first discovery runs before it serves
    try:
        assert lookups.wait_for(lambda: len(lookups.lookups) >= 1 + len(OLLAMA_MODELS))
    finally:
        proc.stop()
    assert {r.path for r in lookups.lookups} == {"/api/tags", "/api/show"}
    assert all(auth_of(r.headers) == {"authorization": f"Bearer {KEY}"} for r in lookups.lookups)
    assert KEY not in proc.output


# ── forward_client_key and a server key ───────────────────────────────────

FORWARD_WITH_SERVER_KEY = f"""
[server]
api_key_env = "FR_FORWARD_TEST_SERVER_KEY"

[[providers]]
name = "own"
format = "openai"
base_url = "http://127.0.0.1:9/v1"

[[providers]]
name = "theirs"
format = "anthropic"
base_url = "http://127.0.0.1:9"
forward_client_key = true
"""


def _says_both(text: str) -> None:
    assert "providers[1].forward_client_key" in text, text
    assert "server.api_key_env" in text and "'theirs'" in text, text
    assert SERVER_KEY not in text


def test_forward_client_key_beside_a_server_key_is_a_config_error() -> None:
    import tomllib

    with pytest.raises(ConfigError) as caught:
        config_from_dict(tomllib.loads(FORWARD_WITH_SERVER_KEY), "f.toml")
    assert caught.value.path == "providers[1].forward_client_key"
    _says_both(str(caught.value))


def test_forward_client_key_alone_or_a_server_key_alone_is_fine() -> None:
    import tomllib

    data = tomllib.loads(FORWARD_WITH_SERVER_KEY)
    config_from_dict({"providers": data["providers"]})
    config_from_dict({**data, "providers": data["providers"][:1]})


@pytest.mark.parametrize("command", ["check", "serve"])
def test_check_and_serve_refuse_it(tmp_path: Path, command: str) -> None:
    conf = tmp_path / "forward.toml"
    conf.write_text(FORWARD_WITH_SERVER_KEY)
    env = {**os.environ, "FR_FORWARD_TEST_SERVER_KEY": SERVER_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "fastroute", command, str(conf), *(
        ["--port", str(free_port())] if command == "serve" else [])], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:  # a generous bound for a process that must exit at once, before it serves
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it served: stop it and its workers
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert proc.returncode == 2, out + err
    assert err.startswith("fastroute: config error: "), err
    _says_both(err)
    assert SERVER_KEY not in out
