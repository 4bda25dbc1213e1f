"""Reloading the config of a running fastroute (two workers) without a restart: ``POST
/v1/admin/reload``, ``SIGHUP`` and ``fastroute reload`` swap a changed file in on every worker; a file
with a mistake changes nothing and the error names the key path; what takes a restart is said;
under load no request fails and a stream open across the reload ends on the config it started
with; keys, counters and the audit log outlive the reload."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ROOT, FastrouteProcess
from tests.stub_upstream import StubUpstream
from tests.test_key_limits import within_one_minute

ADMIN = "fr-admin-token-reload-0042"
ENV = {"FR_RELOAD_ADMIN": ADMIN}
USER = [{"role": "user", "content": "hello"}]
FILE_KEY = "fr-file-key-for-reload-tests-000111"


def config(stub: StubUpstream, tmp: Path, provider: str = "alpha", rewrite: str = "route-one",
           server: str = "workers = 2", extra: str = "") -> str:
    """Two rules on one provider (named ``provider``): ``gpt*`` rewritten to ``rewrite``, ``stub*`` as asked."""
    return f"""
[server]
{server}

[admin]
token_env = "FR_RELOAD_ADMIN"

[storage]
path = "{tmp / 'state.sqlite3'}"

[audit]
path = "{tmp / 'audit.sqlite3'}"

[[providers]]
name = "{provider}"
format = "openai"
base_url = "{stub.base_url}"

[[routers]]
type = "prefix"
model_prefix = "gpt"
provider = "{provider}"
rewrite_model = "{rewrite}"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "{provider}"
{extra}"""


@pytest.fixture
def stub() -> Iterator[StubUpstream]:
    upstream = StubUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def served(tmp_path: Path, stub: StubUpstream) -> Iterator[tuple[FastrouteProcess, Path, str]]:
    """A running fastroute with two workers on ``config(...)``, the file, and a client key made by the admin API."""
    path = tmp_path / "fastroute.toml"
    path.write_text(config(stub, tmp_path))
    proc = FastrouteProcess([str(path)], env=ENV, workers=2).start()
    try:
        made = admin(proc, "POST", "/v1/admin/keys", {"name": "agent"})
        assert made.status_code == 201, made.text
        yield proc, path, made.json()["key"]
    finally:
        proc.stop()


def admin(proc: FastrouteProcess, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{proc.url}{path}", json=body, headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=60)


def chat(proc: FastrouteProcess, key: str, model: str = "gpt-4o") -> httpx.Response:
    """One request on a new connection (so both workers get their share)."""
    return httpx.post(f"{proc.url}/v1/chat/completions", json={"model": model, "messages": USER},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def routes(proc: FastrouteProcess, key: str, n: int = 30) -> set[tuple[str, str]]:
    """(provider, model the upstream was sent) of ``n`` requests, each on its own connection."""
    seen = set()
    for _ in range(n):
        r = chat(proc, key)
        assert r.status_code == 200, r.text
        seen.add((r.headers["x-router-provider"], r.json()["model"]))
    return seen


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def cli(proc: FastrouteProcess, *args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if token is not None:
        env["FASTROUTE_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "fastroute", *args, "--url", proc.url], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, check=False)


def test_admin_reload_swaps_the_changed_file_in_on_both_workers(served: Any, stub: StubUpstream,
                                                                  tmp_path: Path) -> None:
    proc, path, key = served
    assert routes(proc, key) == {("alpha", "route-one")}
    path.write_text(config(stub, tmp_path, provider="beta", rewrite="route-two"))
    r = admin(proc, "POST", "/v1/admin/reload")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["reloaded"] is True and answer["generation"] == 1 and answer["restart_needed"] == []
    assert answer["workers"] == {"serving": 2, "of": 2} and answer["providers"] == 1 and answer["rules"] == 2
    assert routes(proc, key) == {("beta", "route-two")}  # 30 new connections: both workers, the new route only
    explained = httpx.post(f"{proc.url}/v1/route", json={"model": "gpt-4o", "messages": USER},
                           headers={"authorization": f"Bearer {key}"}, timeout=30).json()
    assert explained["route"]["provider"] == "beta" and explained["route"]["model"] == "route-two"
    assert wait_for(lambda: proc.output.count("serves generation 1") == 2), proc.output
    assert "reload (admin API): generation 1 published: 1 provider(s), 2 routing rule(s)" in proc.output
    # a second reload is generation 2; the admin token is required
    assert admin(proc, "POST", "/v1/admin/reload").json()["generation"] == 2
    refused = httpx.post(f"{proc.url}/v1/admin/reload", headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert refused.status_code == 401


def test_sighup_reloads_every_worker(served: Any, stub: StubUpstream, tmp_path: Path) -> None:
    proc, path, key = served
    path.write_text(config(stub, tmp_path, provider="gamma", rewrite="route-hup"))
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: proc.output.count("serves generation 1") == 2), proc.output
    assert "reload (SIGHUP): generation 1 published to the workers" in proc.output
    assert routes(proc, key) == {("gamma", "route-hup")}
    assert proc.proc.poll() is None  # Granian's own SIGHUP would have respawned the workers: nothing of it
    assert "respawning" not in proc.output
    # a broken file on SIGHUP: logged with the key path, the running config stays
    path.write_text(config(stub, tmp_path, provider="gamma", extra="[failover]\nmax_attempts = \"three\"\n"))
    proc.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload (SIGHUP) refused" in proc.output), proc.output
    assert "failover.max_attempts: expected an integer" in proc.output
    assert routes(proc, key, 10) == {("gamma", "route-hup")}


def test_fastroute_reload_command(served: Any, stub: StubUpstream, tmp_path: Path) -> None:
    proc, path, key = served
    path.write_text(config(stub, tmp_path, provider="delta", rewrite="route-cli"))
    done = cli(proc, "reload")
    assert done.returncode == 0, done.stderr
    assert "reloaded: generation 1, 1 provider(s), 2 routing rule(s); 2 of 2 worker(s) serving it" in done.stdout
    assert routes(proc, key) == {("delta", "route-cli")}
    path.write_text(config(stub, tmp_path, provider="delta", extra="[[routers]]\ntype = \"prefix\"\n"
                                                                   "model_prefix = \"x\"\nprovider = \"nobody\"\n"))
    broken = cli(proc, "reload")
    assert broken.returncode == 1
    assert "routers[2].provider: unknown provider 'nobody'" in broken.stderr and "HTTP 400" in broken.stderr
    assert cli(proc, "reload", token=None).returncode == 2  # no token here: a usage error, nothing sent


@pytest.mark.parametrize(("extra", "param", "words"), [
    ("[[routers]]\ntype = \"prefix\"\nmodel_prefx = \"x\"\nprovider = \"alpha\"\n", "routers[2].model_prefx",
     "unknown key (did you mean 'model_prefix'?)"),
    ("[failover]\nbreaker_threshold = true\n", "failover.breaker_threshold", "expected an integer, got boolean"),
    ("[[keys]]\nname = \"ci\"\nkey_env = \"FR_RELOAD_UNSET_VARIABLE\"\n", "keys[0].key_env",
     "$FR_RELOAD_UNSET_VARIABLE is not set"),
    ("[plugins.no-such-plugin]\nenabled = true\n", "plugins.no-such-plugin", "unknown plugin"),
    ("[[routers\n", None, "invalid TOML"),
])
def test_a_broken_file_changes_nothing_and_names_the_key_path(served: Any, stub: StubUpstream, tmp_path: Path,
                                                               extra: str, param: str | None, words: str) -> None:
    proc, path, key = served
    path.write_text(config(stub, tmp_path, provider="beta", rewrite="route-two", extra=extra))
    r = admin(proc, "POST", "/v1/admin/reload")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_config"
    assert error["param"] == param and words in error["message"] and str(path) in error["message"]
    if param is not None:
        assert f"{param}: " in error["message"]
    assert wait_for(lambda: f"reload refused, the running config stays: {path}: " in proc.output), proc.output
    assert routes(proc, key) == {("alpha", "route-one")}  # the old config still serving, on both workers
    assert not proc.output.count("serves generation")


def test_what_takes_a_restart_is_said_and_not_applied(served: Any, stub: StubUpstream, tmp_path: Path) -> None:
    proc, path, key = served
    other = tmp_path / "other"
    text = config(stub, tmp_path, provider="beta", rewrite="route-two",
                  server="workers = 3\nhost = \"0.0.0.0\"\nport = 1\nmax_header_bytes = 16384")
    path.write_text(text.replace(str(tmp_path / "state.sqlite3"), str(other / "state.sqlite3")))
    r = admin(proc, "POST", "/v1/admin/reload")
    assert r.status_code == 200, r.text
    kept = r.json()["restart_needed"]
    assert kept == ["server.host ('127.0.0.1' -> '0.0.0.0')", "server.workers (2 -> 3)",
                    "server.max_header_bytes (65536 -> 16384)",
                    f"storage.path ('{tmp_path / 'state.sqlite3'}' -> '{other / 'state.sqlite3'}')"], kept
    # the port is the command line's (--port): the file's does not count, and is not said
    assert r.json()["workers"] == {"serving": 2, "of": 2}  # still two workers, not three
    assert routes(proc, key) == {("beta", "route-two")}  # what can change did
    assert "kept until a restart: server.host ('127.0.0.1' -> '0.0.0.0'), server.workers (2 -> 3)" in proc.output
    assert not other.exists()  # nothing opened on the new storage path
    assert admin(proc, "GET", "/v1/admin/keys/agent").status_code == 200  # the key store is the running one


def test_no_request_fails_across_reloads_under_load(served: Any, stub: StubUpstream, tmp_path: Path) -> None:
    proc, path, key = served
    failures: list[str] = []
    counts = {"json": 0, "stream": 0}
    stop = threading.Event()

    def json_calls() -> None:
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0, timeout=30)
        while not stop.is_set():
            try:
                answer = client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
                if answer.model not in ("route-one", "route-two") or answer.choices[0].message.content != "stub: hello":
                    failures.append(f"json: {answer.model} {answer.choices[0].message.content!r}")
                counts["json"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(f"json: {type(exc).__name__}: {exc}")

    def stream_calls() -> None:
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0, timeout=30)
        while not stop.is_set():
            try:
                parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
                    model="gpt-4o", messages=USER, stream=True) if c.choices]  # type: ignore[arg-type]
                if "".join(parts) != "stub: hello":
                    failures.append(f"stream: {parts!r}")
                counts["stream"] += 1
            except Exception as exc:  # noqa: BLE001
                failures.append(f"stream: {type(exc).__name__}: {exc}")

    long_stream: dict[str, Any] = {}

    def one_long_stream() -> None:  # sixty chunks 100 ms apart: open across the reloads
        client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0, timeout=60)
        try:
            raw = client.chat.completions.with_raw_response.create(model="stub-paced-long", messages=USER,
                                                                   stream=True)  # type: ignore[arg-type]
            long_stream["provider"] = raw.headers["x-router-provider"]
            long_stream["parts"] = [c.choices[0].delta.content for c in raw.parse() if c.choices
                                    and c.choices[0].delta.content]
            long_stream["ended_after_generation"] = generation[0]
        except Exception as exc:  # noqa: BLE001
            failures.append(f"long stream: {type(exc).__name__}: {exc}")

    generation = [0]
    threads = [threading.Thread(target=json_calls) for _ in range(3)] + \
              [threading.Thread(target=stream_calls) for _ in range(2)]
    long = threading.Thread(target=one_long_stream)
    for t in threads:
        t.start()
    long.start()
    assert wait_for(lambda: "provider" in long_stream, 10)
    try:
        for i in range(4):
            assert wait_for(lambda n=sum(counts.values()): sum(counts.values()) >= n + 20, 30)  # load between
            provider, rewrite = ("beta", "route-two") if i % 2 == 0 else ("alpha", "route-one")
            path.write_text(config(stub, tmp_path, provider=provider, rewrite=rewrite))
            r = admin(proc, "POST", "/v1/admin/reload")
            assert r.status_code == 200 and r.json()["workers"] == {"serving": 2, "of": 2}, r.text
            generation[0] = r.json()["generation"]
        assert wait_for(lambda n=sum(counts.values()): sum(counts.values()) >= n + 20, 30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        long.join(60)
    assert failures == [], failures[:5]
    assert counts["json"] >= 100 and counts["stream"] >= 20, counts
    # the stream that was open across the reloads came from the first config, whole
    assert long_stream["provider"] == "alpha"
    assert long_stream["parts"] == ["part0", *(f" part{i}" for i in range(1, 60))]
    assert long_stream["ended_after_generation"] >= 1
    assert routes(proc, key, 10) == {("alpha", "route-one")}  # the last reload's
    records = admin(proc, "GET", "/v1/admin/logs", None).json()["data"]
    assert [(r["status"], r["error"], r["stream"], r["model"]) for r in records if r["status"] != 200] == []


def test_keys_counters_and_the_audit_log_outlive_a_reload(served: Any, stub: StubUpstream, tmp_path: Path) -> None:
    proc, path, key = served
    within_one_minute()
    limited = admin(proc, "POST", "/v1/admin/keys", {"name": "limited", "rate_limit": {"requests_per_minute": 3}})
    assert limited.status_code == 201, limited.text
    secret = limited.json()["key"]
    assert [chat(proc, secret).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert chat(proc, FILE_KEY).status_code == 401
    before = admin(proc, "GET", "/v1/admin/logs", None).json()["data"]
    file_key = f'[[keys]]\nname = "from-file"\nkey_sha256 = "{hashlib.sha256(FILE_KEY.encode()).hexdigest()}"\n'
    path.write_text(config(stub, tmp_path, provider="beta", rewrite="route-two", extra=file_key))
    assert admin(proc, "POST", "/v1/admin/reload").status_code == 200
    assert chat(proc, secret).status_code == 429  # the count survived: still at its limit this minute
    assert chat(proc, key).status_code == 200  # the admin API's keys survived
    assert chat(proc, FILE_KEY).status_code == 200  # the file's new key counts now
    names = [k["name"] for k in admin(proc, "GET", "/v1/admin/keys").json()["data"]]
    assert names == ["agent", "from-file", "limited"]
    after = admin(proc, "GET", "/v1/admin/logs", None).json()["data"]
    assert {r["request_id"] for r in before} <= {r["request_id"] for r in after}
    assert {r["provider"] for r in after if r["status"] == 200} == {"alpha", "beta"}
    # the file's key goes with the next reload that drops it
    path.write_text(config(stub, tmp_path, provider="beta", rewrite="route-two"))
    assert admin(proc, "POST", "/v1/admin/reload").status_code == 200
    assert chat(proc, FILE_KEY).status_code == 401 and chat(proc, key).status_code == 200


def test_a_server_on_the_embedded_default_has_nothing_to_reload(tmp_path: Path) -> None:
    proc = FastrouteProcess([], cwd=tmp_path).start()  # no file named, none in the directory
    try:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload (SIGHUP) refused, the running config stays: <embedded default>: this "
                                "server was started without a config file" in proc.output), proc.output
        assert httpx.get(f"{proc.url}/health", timeout=30).status_code == 200 and proc.proc.poll() is None
    finally:
        proc.stop()


def test_traces_and_the_cache_go_on_after_a_reload(tmp_path: Path, stub: StubUpstream) -> None:
    """[telemetry] and [cache] live as long as the worker: the providers a reload builds still send
    the trace upstream, their spans still arrive, and the cache still answers (under the new route)."""
    from tests.otlp_receiver import OTLPReceiver

    receiver = OTLPReceiver().start()
    extra = (f'\n[telemetry]\nenabled = true\notlp_endpoint = "{receiver.endpoint}"\n'
             '\n[cache]\nenabled = true\n')
    path = tmp_path / "fastroute.toml"
    path.write_text(config(stub, tmp_path, extra=extra))
    proc = FastrouteProcess([str(path)], env={**ENV, "OTEL_BSP_SCHEDULE_DELAY": "50"}, workers=2).start()
    try:
        key = admin(proc, "POST", "/v1/admin/keys", {"name": "agent"}).json()["key"]
        path.write_text(config(stub, tmp_path, provider="beta", rewrite="route-two", extra=extra))
        assert admin(proc, "POST", "/v1/admin/reload").json()["reloaded"] is True
        for i in range(6):  # new connections: both workers, each on the new generation
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"after-reload-{i}"}]}
            with httpx.Client(base_url=proc.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as one:
                first = one.post("/v1/chat/completions", json=body)
                assert first.status_code == 200 and first.headers["x-router-provider"] == "beta"
                assert first.headers["x-router-cache"] == "miss"
                sent = [r for r in stub.requests if f"after-reload-{i}" in str(r.body)]
                assert len(sent) == 1 and sent[0].headers["traceparent"].startswith("00-")
                trace_id = sent[0].headers["traceparent"].split("-")[1]
                assert receiver.wait_for(lambda: any(s["trace_id"] == trace_id and s["name"] == "provider.http"
                                                     and s["attributes"].get("fastroute.provider") == "beta"
                                                     for s in receiver.spans))
                # the same question on the same connection (the same worker: the memory cache is a
                # worker's own): answered from its cache, the upstream not called again
                assert wait_for(lambda: one.post("/v1/chat/completions", json=body).headers.get("x-router-cache")
                                == "hit")
            assert len([r for r in stub.requests if f"after-reload-{i}" in str(r.body)]) == 1
    finally:
        proc.stop()
        receiver.stop()
