"""Shared fixtures: the stub upstream, and real ``fastroute serve`` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.stub_upstream import StubUpstream

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_KEY = "sk-provider-secret-0123456789"

if TYPE_CHECKING:
    from tests.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def own_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test's default state (``$XDG_DATA_HOME/fastroute``: state, keys, limits, the audit log)
    is this session's own, never the user's ``~/.local/share/fastroute``: an app built in process,
    or a server started without its own ``XDG_DATA_HOME``, writes there."""
    home = tmp_path_factory.mktemp("xdg-data")
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(home)
    try:
        yield home
    finally:
        if before is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FastrouteProcess:
    """``python -m fastroute serve`` in a subprocess (its own process group), stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 workers: int = 1) -> None:
        self.port = free_port()
        self.args = args
        # the embedded state store (SQLite under $XDG_DATA_HOME) of a test server is the test's own
        data_home = tempfile.mkdtemp(prefix="fastroute-test-data-")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": data_home, **(env or {})}
        self.cwd = cwd
        self.workers = workers
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def start(self, timeout: float = 30.0) -> FastrouteProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastroute", "serve", *self.args, "--port", str(self.port)],
            env=self.env, cwd=self.cwd or ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(f"fastroute exited with {self.proc.returncode}:\n{self.output}")
            # ready: every worker has started and /health answers
            if self.output.count("Started worker-") >= self.workers:
                try:
                    if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fastroute did not become healthy:\n{self.output}")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode


def two_dialects(stub: StubUpstream, openai_prefix: str = "") -> str:
    """Config lines: the stub as an openai and an anthropic provider; ``claude-*`` models go to the
    anthropic one, models starting with ``openai_prefix`` to the openai one."""
    return f"""[[providers]]
name = "stub-openai"
format = "openai"
base_url = "{stub.base_url}"

[[providers]]
name = "stub-anthropic"
format = "anthropic"
base_url = "http://{stub.host}:{stub.port}"

[[routers]]
type = "prefix"
model_prefix = "claude-"
provider = "stub-anthropic"

[[routers]]
type = "prefix"
model_prefix = "{openai_prefix}"
provider = "stub-openai"
"""


@pytest.fixture(scope="session")
def stub() -> Iterator[StubUpstream]:
    upstream = StubUpstream().start()
    yield upstream
    upstream.stop()


def stub_config(stub: StubUpstream, upstream_client: str = "aiohttp") -> str:
    dead_port = free_port()  # nothing listens there
    return f"""
[server]
upstream_client = "{upstream_client}"
max_body_bytes = 262144   # above a real agent request (~80 KB), far below the default

[failover]
breaker_threshold = 1000   # these tests fail on purpose; breakers have their own tests

[[providers]]
name = "echo"
format = "echo"

[[providers]]
name = "stub"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
models = ["stub-model"]

[[providers]]
name = "stub-impatient"
format = "openai"
base_url = "{stub.base_url}"
read_timeout = 0.5

[[providers]]
name = "stub-forward"
format = "openai"
base_url = "{stub.base_url}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"
forward_client_key = true

[[providers]]
name = "dead"
format = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"
connect_timeout = 2

[[providers]]
name = "stub-by-name"              # a hostname, not an IP: cookie jars treat the two differently
format = "openai"
base_url = "http://localhost:{stub.port}/v1"

[[providers]]
name = "stub-anthropic"
format = "anthropic"
base_url = "http://{stub.host}:{stub.port}"
api_key_env = "FASTROUTE_TEST_PROVIDER_KEY"

[[providers]]
name = "stub-ollama"
format = "ollama"
base_url = "http://{stub.host}:{stub.port}"
models = ["o/stub-llama"]

[[routers]]
type = "prefix"
model_prefix = "echo"
provider = "echo"

[[routers]]
type = "prefix"
model_prefix = "o/"
provider = "stub-ollama"

[[routers]]
type = "prefix"
model_prefix = "named/"
provider = "stub-by-name"
rewrite_model = "stub-cookie"

[[routers]]
type = "prefix"
model_prefix = "a/"
provider = "stub-anthropic"

[[routers]]
type = "prefix"
model_prefix = "alias"
provider = "stub"
rewrite_model = "stub-rewritten"

[[routers]]
type = "prefix"
model_prefix = "slowpoke"
provider = "stub-impatient"
rewrite_model = "stub-hang"

[[routers]]
type = "prefix"
model_prefix = "forward"
provider = "stub-forward"

[[routers]]
type = "prefix"
model_prefix = "dead"
provider = "dead"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"
"""


def start_router(tmp_path: Path, stub: StubUpstream, upstream_client: str = "aiohttp", extra: str = "",
                 env: dict[str, str] | None = None) -> FastrouteProcess:
    """A real fastroute on the stub config, plus ``extra`` TOML sections (``logging_to(path)`` ...)."""
    config = tmp_path / f"fastroute-{upstream_client}.toml"
    config.write_text(stub_config(stub, upstream_client) + extra)
    return FastrouteProcess([str(config)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY, **(env or {})}).start()


def logging_to(path: Path) -> str:
    """The TOML section that turns the JSONL request log on, into ``path``."""
    return f'\n[logging]\nenabled = true\npath = "{path}"\n'


@pytest.fixture(scope="session", params=["lean", "aiohttp", "httpx"])
def router(request: pytest.FixtureRequest, stub: StubUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    """A real fastroute process routing to the stub, once per upstream client."""
    proc = start_router(tmp_path_factory.mktemp("router"), stub, request.param)
    yield proc
    proc.stop()


@pytest.fixture
def fresh_stub(stub: StubUpstream) -> StubUpstream:
    stub.reset()
    return stub


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server with a password (tests.redis_server.PASSWORD), for a module's tests."""
    from tests.redis_server import PASSWORD, RedisServer

    server = RedisServer(free_port(), PASSWORD)  # skips (or fails, with FASTROUTE_REQUIRE_REDIS) without one
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastroute test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
