"""The line on the server's stdout: one per failed request, one per request with ``--access-log``
(``[server] access_log``), never a key; written by the workers, off the request path."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from fastroute.config import config_from_dict
from fastroute.errors import ConfigError
from fastroute.recording.console import PIPE_BUF, ConsoleLog
from tests.conftest import PROVIDER_KEY, FastrouteProcess, stub_config
from tests.stub_upstream import StubUpstream

USER = [{"role": "user", "content": "hi"}]


def wait_for_lines(proc: FastrouteProcess, ids: list[str], timeout: float = 15.0) -> None:
    """Until every id is on a line of the server's output (the lines come while it runs)."""
    deadline = time.monotonic() + timeout
    while not all(i in proc.output for i in ids):
        assert time.monotonic() < deadline, proc.output
        time.sleep(0.02)


def line_of(proc: FastrouteProcess, needle: str) -> str:
    lines = [line for line in proc.output.splitlines() if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def chat(proc: FastrouteProcess, model: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{proc.url}/v1/chat/completions", json={"model": model, "stream": stream, "messages": USER},
                      timeout=30)


@pytest.fixture(scope="module")
def quiet(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastrouteProcess]:
    """The shared stub config, as it comes: no access log."""
    conf = tmp_path_factory.mktemp("console") / "quiet.toml"
    conf.write_text(stub_config(stub))
    proc = FastrouteProcess([str(conf)], env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}).start()
    yield proc
    proc.stop()


def test_each_failed_request_prints_one_line(quiet: FastrouteProcess) -> None:
    ok = chat(quiet, "stub-model")
    dead = chat(quiet, "dead")
    unrouted = chat(quiet, "nobody-serves-this")
    cut = chat(quiet, "stub-cut", stream=True)  # a stream that breaks half way is a failure too
    claude = httpx.post(f"{quiet.url}/v1/messages", json={"model": "nobody", "max_tokens": 5, "messages": USER})
    wrong_base = httpx.post(f"{quiet.url}/v1/v1/chat/completions", json={"model": "stub-model", "messages": USER})
    assert (ok.status_code, dead.status_code, unrouted.status_code, claude.status_code) == (200, 502, 400, 400)
    failed = [r.headers["x-request-id"] for r in (dead, unrouted, cut, claude)]
    wait_for_lines(quiet, [*failed, "/v1/v1/chat/completions"])

    line = line_of(quiet, failed[0])
    assert re.search(r"\d\d:\d\d:\d\d 502 openai +dead -> dead +[\d.]+ ms +req_\w+ +error: provider 'dead'", line), line
    line = line_of(quiet, failed[1])
    assert " 400 openai " in line and "nobody-serves-this" in line and "no provider configured" in line
    assert "error: " in line_of(quiet, failed[2]) and "stub-cut -> stub" in line_of(quiet, failed[2])
    assert " 400 anthropic " in line_of(quiet, failed[3])
    line = line_of(quiet, "/v1/v1/chat/completions")
    assert " 404 openai " in line and f"base URL {quiet.url}/v1" in line
    assert ok.headers["x-request-id"] not in quiet.output  # a success is quiet without the access log
    assert PROVIDER_KEY not in quiet.output


def test_access_log_prints_every_request_from_every_worker(stub: StubUpstream, tmp_path: Path) -> None:
    conf = tmp_path / "access.toml"
    conf.write_text(stub_config(stub))
    proc = FastrouteProcess([str(conf), "--access-log", "--workers", "2"],
                            env={"FASTROUTE_TEST_PROVIDER_KEY": PROVIDER_KEY}, workers=2).start()
    try:
        answers = [chat(proc, "stub-model", stream=i % 2 == 1) for i in range(8)]
        answers.append(httpx.post(f"{proc.url}/v1/messages",
                                  json={"model": "echo", "max_tokens": 5, "messages": USER}))
        answers.append(httpx.post(f"{proc.url}/api/chat", json={"model": "echo", "messages": USER, "stream": False}))
        answers.append(httpx.post(f"{proc.url}/v1/responses", json={"model": "alias", "input": "hi"}))
        assert {a.status_code for a in answers} == {200}
        ids = [a.headers["x-request-id"] for a in answers]
        wait_for_lines(proc, ids)
        lines = [line_of(proc, i) for i in ids]  # one line each, whichever worker answered
        assert all(" 200 " in line and "error:" not in line for line in lines)
        assert "stub-model -> stub" in lines[0]
        assert " anthropic " in lines[8] and " ollama " in lines[9]
        assert " responses " in lines[10] and "alias -> stub as stub-rewritten" in lines[10]
    finally:
        assert proc.stop() == 0
    assert "Started worker-2" in proc.output
    assert "a line here for every request." in proc.output


@dataclass
class KeyEcho(StubUpstream):
    """An upstream that refuses every key, and repeats it in its error (some local servers do)."""

    async def _chat(self, request: web.Request) -> web.Response:
        key = request.headers.get("authorization", "").partition(" ")[2]
        return web.json_response({"error": {"message": f"invalid key {key} (sent as Bearer {key})",
                                            "type": "invalid_request_error"}}, status=401)


@pytest.fixture
def key_echo() -> Iterator[KeyEcho]:
    upstream = KeyEcho().start()
    yield upstream
    upstream.stop()


def test_no_key_reaches_a_line(key_echo: KeyEcho, tmp_path: Path) -> None:
    configured = "provider-secret-plain-42"  # blanked because the config names its variable
    client_key = "sk-client-0123456789abcdef"  # forwarded, named nowhere: blanked because it looks like a key
    conf = tmp_path / "keys.toml"
    conf.write_text(f"""
[server]
access_log = true

[[providers]]
name = "own-key"
format = "openai"
base_url = "{key_echo.base_url}"
api_key_env = "FR_CONSOLE_TEST_KEY"

[[providers]]
name = "their-key"
format = "openai"
base_url = "{key_echo.base_url}"
forward_client_key = true

[[routers]]
type = "prefix"
model_prefix = "own"
provider = "own-key"

[[routers]]
type = "prefix"
model_prefix = "theirs"
provider = "their-key"
""")
    proc = FastrouteProcess([str(conf)], env={"FR_CONSOLE_TEST_KEY": configured}).start()
    try:
        own = chat(proc, "own")
        theirs = httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "theirs", "messages": USER},
                            headers={"authorization": f"Bearer {client_key}"})
        assert own.status_code == theirs.status_code == 401
        assert configured in own.text  # the upstream's own words reach its client, as they are
        ids = [own.headers["x-request-id"], theirs.headers["x-request-id"]]
        wait_for_lines(proc, ids)
        for rid in ids:  # both mentions of the key are blanked, the rest of the reason stays
            line = line_of(proc, rid)
            assert "error: invalid key [redacted] (sent as " in line and line.count("[redacted]") == 2, line
    finally:
        proc.stop()
    assert configured not in proc.output and client_key not in proc.output


# ── the writer, in the test process ─────────────────────────────────────

class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_lines_leave_in_whole_lines_of_at_most_pipe_buf() -> None:
    # several workers share one stdout: a write of at most PIPE_BUF bytes reaches a pipe in one piece
    out = Writes()
    console = ConsoleLog(out=out)
    ids = [f"req_{i:016x}" for i in range(300)]
    for rid in ids:
        console.note({"ts_ms": 0, "status": 502, "dialect": "openai", "requested_model": "m", "provider": "p",
                      "sent_model": "m", "duration_ms": 1.0, "id": rid, "error": "boom " * 20})
    console.close()  # never started: close writes out what is queued
    assert len(out.writes) > 1
    assert all(len(w.encode()) <= PIPE_BUF and w.endswith("\n") for w in out.writes)
    assert re.findall(r"req_[0-9a-f]{16}", "".join(out.writes)) == ids


def test_access_log_key_is_checked() -> None:
    assert config_from_dict({"server": {"access_log": True}}).server.access_log is True
    with pytest.raises(ConfigError) as info:
        config_from_dict({"server": {"access_log": "yes"}}, "f.toml")
    assert str(info.value) == "f.toml: server.access_log: expected a boolean, got string 'yes'"
