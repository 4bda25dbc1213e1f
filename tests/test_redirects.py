"""A provider's key goes only to that provider: no redirect is followed, no proxy taken from the environment.

Two servers on 127.0.0.1: a *redirector* that answers every request with a 301, 302, 307 or 308 whose
``Location`` points at a *recorder*, which counts every connection and every byte it receives.  A real
fastroute routes to the redirector (OpenAI-, Anthropic- and Ollama-format providers, each with a key),
with each upstream client, JSON and stream: the client gets a 502 in its own dialect naming the
provider, the status and the origin it was sent to — and the recorder receives nothing at all.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from fastroute.config import config_from_dict
from fastroute.errors import UpstreamProtocolError
from fastroute.providers import build_providers
from fastroute.providers.base import redirect_origin
from fastroute.providers.transport import Timeouts, make_client
from fastroute.routing.discovery import Discovery
from tests.conftest import PROVIDER_KEY, FastrouteProcess, stub_config
from tests.stub_upstream import StubUpstream

KEY = "sk-redirect-test-provider-key-0123456789"
KEY_ENV = "FR_REDIRECT_TEST_KEY"
#: in the Location's path and query (and the redirect's body): never repeated anywhere
PATH_SECRET = "path-secret-4f1c"
QUERY_SECRET = "query-secret-9e2d"
STATUSES = (301, 302, 307, 308)
FORMATS = ("openai", "anthropic", "ollama")
TIMEOUTS = Timeouts(connect=5.0, read=10.0)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Servers:
    """The redirector (aiohttp) and the recorder (raw TCP), on one event loop in a thread."""

    redirector_port: int = 0
    recorder_port: int = 0
    #: (path, lower-cased headers) of each request the redirector answered
    redirected: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: connections the recorder accepted, and every byte they carried
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def redirector(self) -> str:
        return f"http://127.0.0.1:{self.redirector_port}"

    @property
    def recorder(self) -> str:
        return f"http://127.0.0.1:{self.recorder_port}"

    def start(self) -> Servers:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="redirect-servers")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the redirect test servers did not start")
        return self

    async def _start(self) -> None:
        self._recorder = await asyncio.start_server(self._record, "127.0.0.1", 0)
        self.recorder_port = self._recorder.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_route("*", "/{status:\\d{3}}/{rest:.*}", self._redirect)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self.redirector_port = _port()
        await web.TCPSite(self._runner, "127.0.0.1", self.redirector_port).start()

    async def _redirect(self, request: web.Request) -> web.Response:
        await request.read()
        self.redirected.append((request.path, {k.lower(): v for k, v in request.headers.items()}))
        target = f"{self.recorder}/{PATH_SECRET}/{request.match_info['rest']}?api_key={QUERY_SECRET}"
        # a body that names the target, as many servers write one: fastroute must not repeat it either
        return web.Response(status=int(request.match_info["status"]), headers={"Location": target},
                            text=f'{{"error": {{"message": "moved to {target}"}}}}', content_type="application/json")

    async def _record(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while b"\r\n\r\n" not in self.received:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                self.received += chunk
            # answer at once, so a client that did follow fails fast instead of waiting for its read timeout
            writer.write(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    def reset(self) -> None:
        self.redirected.clear()
        self.connections = 0
        self.received.clear()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._recorder.close()
            await self._runner.cleanup()

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    s = Servers().start()
    yield s
    s.stop()


@pytest.fixture
def fresh(servers: Servers) -> Servers:
    servers.reset()
    return servers


def base_url(servers: Servers, fmt: str, status: int) -> str:
    return f"{servers.redirector}/{status}" + ("/v1" if fmt == "openai" else "")


def redirect_config(servers: Servers, upstream_client: str) -> str:
    parts = [f'[server]\nupstream_client = "{upstream_client}"\n\n'
             "[failover]\nbreaker_threshold = 1000   # every call here fails on purpose\n"]
    for fmt in FORMATS:
        for status in STATUSES:
            name = f"{fmt}-{status}"
            parts.append(f'\n[[providers]]\nname = "{name}"\nformat = "{fmt}"\n'
                         f'base_url = "{base_url(servers, fmt, status)}"\napi_key_env = "{KEY_ENV}"\n'
                         f'\n[[routers]]\ntype = "prefix"\nmodel_prefix = "{name}/"\nprovider = "{name}"\n')
    return "".join(parts)


@pytest.fixture(scope="module", params=["lean", "aiohttp", "httpx"])
def router(request: pytest.FixtureRequest, servers: Servers,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    path = tmp_path_factory.mktemp("redirects") / "fastroute.toml"
    path.write_text(redirect_config(servers, request.param))
    proc = FastrouteProcess([str(path)], env={KEY_ENV: KEY}).start()
    yield proc
    proc.stop()
    # nothing it printed (a failure line per request) holds the key or what the Location carried
    for secret in (KEY, PATH_SECRET, QUERY_SECRET):
        assert secret not in proc.output


CLIENT_PATHS = {"openai": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages",
                "ollama": "/api/chat"}


def client_body(dialect: str, model: str, stream: bool) -> dict[str, Any]:
    if dialect == "responses":
        return {"model": model, "stream": stream, "input": "hi"}
    body: dict[str, Any] = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if dialect == "anthropic":
        body["max_tokens"] = 64
    return body


def error_message(dialect: str, payload: Any) -> str:
    """The error's message, checking the error has the shape of the client's dialect."""
    if dialect in ("openai", "responses"):
        assert payload["error"]["type"] == "upstream_error", payload
        return payload["error"]["message"]
    if dialect == "anthropic":
        assert payload["type"] == "error" and payload["error"]["type"] == "api_error", payload  # its word for a 502
        return payload["error"]["message"]
    assert isinstance(payload["error"], str), payload
    return payload["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dialect", list(CLIENT_PATHS))
def test_a_redirect_is_a_502_and_its_target_receives_nothing(router: FastrouteProcess, fresh: Servers, dialect: str,
                                                              fmt: str, status: int, stream: bool) -> None:
    name = f"{fmt}-{status}"
    resp = httpx.post(router.url + CLIENT_PATHS[dialect], json=client_body(dialect, f"{name}/m", stream),
                      headers={"x-api-key": "client-key"}, timeout=30)
    assert resp.status_code == 502, resp.text
    message = error_message(dialect, resp.json())
    assert f"provider '{name}'" in message and f"HTTP {status}" in message, message
    assert f"a redirect to {fresh.recorder};" in message, message  # where it pointed: the origin alone
    for secret in (KEY, PATH_SECRET, QUERY_SECRET):
        assert secret not in resp.text
    # the provider was called, with its key...
    [(path, headers)] = fresh.redirected
    assert path.startswith(f"/{status}/")
    assert KEY in (headers.get("x-api-key") if fmt == "anthropic" else headers.get("authorization", ""))
    # ...and where it pointed heard nothing: no connection, not a byte
    assert fresh.connections == 0 and bytes(fresh.received) == b""


# ── the transport alone, and discovery ────────────────────────────────────

@pytest.mark.parametrize("impl", ["lean", "aiohttp", "httpx"])
def test_the_transport_hands_a_redirect_back_unfollowed(fresh: Servers, impl: str) -> None:
    headers = {"x-api-key": KEY, "authorization": f"Bearer {KEY}"}

    async def run() -> tuple[int, int, Exception | None]:
        client = make_client(impl)
        try:
            reply = await client.post(f"{fresh.redirector}/307/v1/x", headers, b"{}", TIMEOUTS)
            stream = await client.stream(f"{fresh.redirector}/308/v1/x", headers, b"{}", TIMEOUTS)
            await stream.aclose()
            try:
                await client.get_json(f"{fresh.redirector}/302/v1/models", headers, TIMEOUTS)
                error = None
            except UpstreamProtocolError as exc:
                error = exc
            return reply.status, stream.status, error
        finally:
            await client.aclose()

    posted, streamed, error = asyncio.run(run())
    assert (posted, streamed) == (307, 308)
    assert error is not None and "redirect" in str(error)
    assert len(fresh.redirected) == 3
    assert fresh.connections == 0 and bytes(fresh.received) == b""


def test_discovery_follows_no_redirect(fresh: Servers) -> None:
    cfg = config_from_dict({"providers": [
        {"name": "local", "format": "ollama", "base_url": f"{fresh.redirector}/307", "api_key_env": KEY_ENV,
         "discover": True},
        {"name": "vllm", "format": "openai", "base_url": f"{fresh.redirector}/308/v1", "api_key_env": KEY_ENV,
         "discover": True}]})
    providers = build_providers(cfg, None)

    async def run() -> None:
        d = Discovery(cfg, providers)
        await d.refresh()
        await d.stop()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        asyncio.run(run())
    assert not providers["local"].reachable and not providers["vllm"].reachable
    assert sorted(path for path, _ in fresh.redirected) == ["/307/api/tags", "/308/v1/models"]
    assert all(h["authorization"] == f"Bearer {KEY}" for _, h in fresh.redirected)  # it was the provider's
    assert fresh.connections == 0 and bytes(fresh.received) == b""


# ── no proxy from the environment ─────────────────────────────────────────

@pytest.mark.parametrize("upstream_client", ["lean", "aiohttp", "httpx"])
def test_no_proxy_is_taken_from_the_environment(fresh: Servers, stub: StubUpstream, tmp_path: Path,
                                                upstream_client: str) -> None:
    """With every proxy variable naming the recorder, calls still go straight to the provider."""
    proxy = fresh.recorder
    env = {name: proxy for base in ("http_proxy", "https_proxy", "all_proxy") for name in (base, base.upper())}
    env |= {"no_proxy": "", "NO_PROXY": "", "FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}
    conf = tmp_path / "proxied.toml"
    conf.write_text(stub_config(stub, upstream_client))
    proc = FastrouteProcess([str(conf)], env=env).start()
    try:
        for stream in (False, True):
            resp = httpx.post(f"{proc.url}/v1/chat/completions", timeout=30,
                              json={"model": "stub-model", "stream": stream,
                                    "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200, resp.text
            assert b"stub:" in resp.content  # the stub answered (a stream has it word by word)
    finally:
        proc.stop()
    assert fresh.connections == 0 and bytes(fresh.received) == b""


def test_discovery_takes_no_proxy_from_the_environment(fresh: Servers, stub: StubUpstream) -> None:
    cfg = config_from_dict({"providers": [
        {"name": "local", "format": "ollama", "base_url": f"http://{stub.host}:{stub.port}", "discover": True}]})
    providers = build_providers(cfg, None)

    async def run() -> None:
        d = Discovery(cfg, providers)
        await d.refresh()
        await d.stop()

    with pytest.MonkeyPatch.context() as mp:
        for base in ("http_proxy", "https_proxy", "all_proxy"):
            mp.setenv(base, fresh.recorder)
            mp.setenv(base.upper(), fresh.recorder)
        mp.delenv("no_proxy", raising=False)
        mp.delenv("NO_PROXY", raising=False)
        asyncio.run(run())
    assert providers["local"].reachable and "stub-llama:latest" in providers["local"].models()
    assert fresh.connections == 0 and bytes(fresh.received) == b""


# ── what an error may say of a Location ───────────────────────────────────

@pytest.mark.parametrize("location, said", [
    ("https://user:pw@Other.example:8443/p/sk-abc?key=sk-def#frag", "https://other.example:8443"),
    ("http://[::1]:8080/x?token=1", "http://[::1]:8080"),
    ("/v2/chat/completions?key=sk-def", "http://127.0.0.1:9"),  # relative: the provider's own origin
    ("//elsewhere.example/x", "http://elsewhere.example"),
    ("ftp://files.example/sk-abc", "an address that is not an http(s) URL"),
    ("http://bad:99999/", "an address that is not a URL"),
    ("http://a b/sk-abc", "an http address with an unreadable host"),
])
def test_a_location_is_named_by_its_origin_alone(location: str, said: str) -> None:
    assert redirect_origin(location, "http://127.0.0.1:9/v1/chat/completions") == said

