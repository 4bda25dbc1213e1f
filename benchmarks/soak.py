"""Soak: 100,000 mixed requests through one fastroute worker; its memory and open files every 10,000.

    python benchmarks/soak.py [--requests 100000] [--concurrency 32] [--every 10000] [--json out.json]

Processes besides this one, each in its own process group on 127.0.0.1, all stopped on exit:

- the tests' aiohttp upstream stub (tests/stub_upstream.py: OpenAI, Anthropic and Ollama
  dialects, error modes by model name), its record of requests cut to the last 100;
- a real ``fastroute serve`` (one worker) routing to it, with the request log, the dashboard
  and the SQLite state store on (in a temporary directory), and a small ``max_body_bytes``.

This process is the load generator (aiohttp, uvloop, keep-alive): ``--concurrency`` requests
at a time, drawn from a fixed mix by a seeded random generator (:data:`MIX`): plain and
streamed answers in all four client dialects (passed through and translated), upstream
errors (500, 429, a provider's 400, a read timeout), cut streams, clients that go away after
the first chunk, made-up model names (routed by a catch-all prefix rule, and unroutable ones:
400), over-limit requests (headers, body size, nesting, a head Granian itself cuts), token
counts and model lists.  Every answer is checked against what that kind must get; one
dashboard viewer reads the event feed all along, and ``/metrics`` is scraped every 2,000.

Every ``--every`` requests the load pauses until nothing is in flight, and the resident
memory (VmRSS, /proc) of fastroute's process tree and of its worker, and the worker's open
files (/proc/PID/fd) and threads, are read.  "Flat after warm-up" is judged from the second
reading on (the first 10,000 fill what is kept of recent requests: the event history, the
caches, the allocator's pools).  Linux, Python >= 3.11.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from e2e import Children, free_port, machine_info, tree_pids, wait_healthy  # noqa: E402  (one place for each)
from open_streams import rss_kb  # noqa: E402

MAX_BODY = 262_144
DEEP = 200  # levels: over the default max_json_depth (128), under orjson's own 1024
APP_HEADER = 70_000  # over the default max_header_bytes (64 KiB): answered by fastroute in the dialect
CUT_HEADER = 300_000  # beyond Granian's buffer (2 x 64 KiB): Granian cuts it itself


# ── the mix ────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    dialect: str  # openai | anthropic | responses | ollama | other
    model: str  # "{rand}" becomes a random hex name
    stream: bool = False
    expect: int = 200
    #: what the answer must show: "done" (a clean end in the dialect), "error-end" (a stream that
    #: ends with an error event), "gone" (the client leaves after the first chunk), "error" (any
    #: error body of the dialect), "" (status only)
    check: str = "done"
    special: str = ""  # deep | big-header | cut-header | big-body | count-tokens | models


MIX = [
    Kind("openai json", 12, "openai", "stub-model"),
    Kind("openai stream", 12, "openai", "stub-model", True),
    Kind("anthropic json (passed through)", 5, "anthropic", "a/stub-model"),
    Kind("anthropic stream (passed through)", 5, "anthropic", "a/stub-model", True),
    Kind("anthropic json (translated)", 4, "anthropic", "stub-model"),
    Kind("anthropic stream (translated)", 4, "anthropic", "stub-model", True),
    Kind("responses json", 5, "responses", "stub-model"),
    Kind("responses stream", 5, "responses", "stub-model", True),
    Kind("ollama json (passed through)", 3, "ollama", "o/stub-model"),
    Kind("ollama stream (passed through)", 3, "ollama", "o/stub-model", True),
    Kind("ollama stream (translated)", 3, "ollama", "stub-model", True),
    Kind("random model, openai", 4, "openai", "m-{rand}"),
    Kind("random model, anthropic stream", 2, "anthropic", "m-{rand}", True),
    Kind("unroutable model, openai", 2, "openai", "zz-{rand}", expect=400, check="error"),
    Kind("unroutable model, ollama", 1, "ollama", "zz-{rand}", expect=400, check="error"),
    Kind("unroutable model, anthropic stream", 1, "anthropic", "zz-{rand}", True, expect=400, check="error"),
    Kind("upstream 500, openai", 2, "openai", "stub-error-500", expect=502, check="error"),
    Kind("upstream 500, anthropic stream", 1, "anthropic", "stub-error-500", True, expect=502, check="error"),
    Kind("upstream 429", 2, "openai", "stub-429", expect=429, check="error"),
    Kind("upstream 400 (context)", 1, "openai", "stub-context", expect=400, check="error"),
    Kind("upstream read timeout", 0.3, "openai", "slowpoke", expect=504, check="error"),
    Kind("cut stream, openai", 2, "openai", "stub-cut", True, check="error-end"),
    Kind("cut stream, anthropic", 1, "anthropic", "a/stub-cut", True, check="error-end"),
    Kind("cut stream, ollama", 1, "ollama", "o/stub-cut", True, check="error-end"),
    Kind("client gone mid-stream, openai", 2, "openai", "stub-slow", True, check="gone"),
    Kind("client gone mid-stream, anthropic", 1, "anthropic", "stub-slow", True, check="gone"),
    Kind("nested too deep", 1, "openai", "stub-model", expect=400, check="error", special="deep"),
    Kind("headers too large", 1, "anthropic", "stub-model", expect=431, check="error", special="big-header"),
    Kind("head cut by Granian", 0.2, "openai", "stub-model", expect=431, check="", special="cut-header"),
    Kind("body too large", 1, "responses", "stub-model", expect=413, check="error", special="big-body"),
    Kind("count tokens", 1, "anthropic", "stub-model", check="", special="count-tokens"),
    Kind("model list", 1, "other", "", check="", special="models"),
]

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses",
         "ollama": "/api/chat"}


def request_body(kind: Kind, rng: random.Random) -> dict[str, Any]:
    model = kind.model.replace("{rand}", "%012x" % rng.getrandbits(48))
    text = f"soak {rng.getrandbits(20)}"
    if kind.dialect == "responses":
        body: dict[str, Any] = {"model": model, "input": text, "stream": kind.stream}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": kind.stream}
    if kind.dialect == "anthropic":
        body["max_tokens"] = 32
    if kind.dialect == "openai" and kind.stream:
        body["stream_options"] = {"include_usage": True}
    if kind.special == "deep":
        deep: Any = 1
        for _ in range(DEEP):
            deep = [deep]
        body["metadata"] = deep
    elif kind.special == "big-body":
        body["input"] = "x" * (MAX_BODY + 1000)
    elif kind.special == "count-tokens":
        body.pop("stream")
    return body


def finished(dialect: str, data: bytes, stream: bool) -> bool:
    """Did the answer end cleanly, as its dialect ends an answer?"""
    if not stream:
        return data[:1] == b"{" and b'"error"' not in data[:40]
    tail = data[-400:]
    if dialect == "openai":
        return tail.endswith(b"data: [DONE]\n\n")
    if dialect == "anthropic":
        return b"event: message_stop" in tail
    if dialect == "responses":
        return data.rstrip().rsplit(b"\n\n", 1)[-1].startswith(b"event: response.completed")
    return b'"done":true' in tail.replace(b" ", b"")


def ended_in_error(dialect: str, data: bytes) -> bool:
    last = data.rstrip().rsplit(b"\n\n" if dialect != "ollama" else b"\n", 1)[-1]
    return b"error" in last and not finished(dialect, data, True)


# ── the load ───────────────────────────────────────────────────────────────

#: kinds that make no exchange (no line in the request log): the rest make exactly one each
NOT_EXCHANGES = ("model list", "count tokens", "head cut by Granian")


class Load:
    def __init__(self, url: str, concurrency: int, seed: int, skip: list[str]) -> None:
        self.url = url
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.kinds = [k for k in MIX if not any(word in k.name for word in skip)]
        self.weights = [k.weight for k in self.kinds]
        self.counts: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.samples: list[str] = []
        self.sent = 0

    async def one(self, session: Any, kind: Kind) -> None:
        import aiohttp

        rng = self.rng
        headers = {"content-type": "application/json", "authorization": "Bearer sk-soak"}
        if kind.special == "models":
            method, path, data = "GET", "/v1/models", None
        else:
            body = request_body(kind, rng)
            method = "POST"
            path = "/v1/messages/count_tokens" if kind.special == "count-tokens" else PATHS[kind.dialect]
            data = json.dumps(body).encode()
        if kind.special == "big-header":
            headers["x-pad"] = "h" * APP_HEADER
        elif kind.special == "cut-header":
            headers["x-pad"] = "h" * CUT_HEADER
        ok, status, seen = False, 0, b""
        try:
            async with session.request(method, self.url + path, data=data, headers=headers) as resp:
                status = resp.status
                if kind.check == "gone":
                    seen = await resp.content.readany()
                    resp.close()  # the client goes away mid-stream
                    ok = status == 200 and bool(seen)
                else:
                    seen = await resp.read()
                    ok = status == kind.expect
                    if ok and kind.check == "done":
                        ok = finished(kind.dialect, seen, kind.stream)
                    elif ok and kind.check == "error-end":
                        ok = ended_in_error(kind.dialect, seen)
                    elif ok and kind.check == "error":
                        ok = b"error" in seen[:200]
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            # Granian answers a head it cuts and closes the connection, perhaps before the head is sent
            ok = kind.special == "cut-header"
            seen = f"{type(exc).__name__}: {exc}".encode()
        self.counts[kind.name] += 1
        if not ok:
            self.unexpected[kind.name] += 1
            if self.unexpected[kind.name] <= 3:  # a few of each kind
                self.samples.append(f"{kind.name}: HTTP {status}: {seen[:300]!r} ... {seen[-200:]!r}")

    async def batch(self, session: Any, n: int) -> None:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                kind = self.rng.choices(self.kinds, self.weights)[0]
                await self.one(session, kind)
                self.sent += 1
                if self.sent % 2000 == 0:
                    async with session.get(self.url + "/metrics") as resp:
                        await resp.read()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))


async def watch_events(url: str, seen: list[int]) -> None:
    """One dashboard viewer, reading the feed all along (it reconnects if the feed ends)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(url + "/dashboard/events") as resp:
                    async for chunk in resp.content.iter_any():
                        seen[0] += chunk.count(b"data: ")
            except aiohttp.ClientError:
                await asyncio.sleep(0.5)


# ── readings from /proc ────────────────────────────────────────────────────

def worker_pid(main_pid: int) -> int:
    """Granian's worker: the one descendant of ``fastroute serve`` that serves (the largest)."""
    others = [p for p in tree_pids(main_pid) if p != main_pid]
    if not others:
        return main_pid
    return max(others, key=lambda p: rss_kb(p))


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reading(main_pid: int, worker: int, stub_pid: int, done: int, t0: float) -> dict[str, Any]:
    return {"requests": done, "elapsed_s": round(time.monotonic() - t0, 1),
            "rss_tree_mb": round(rss_kb(main_pid) / 1024, 1), "rss_worker_mb": round(rss_kb(worker) / 1024, 1),
            "fds_worker": len(os.listdir(f"/proc/{worker}/fd")), "threads_worker": proc_status(worker, "Threads"),
            "rss_stub_mb": round(rss_kb(stub_pid) / 1024, 1)}


# ── the conductor ──────────────────────────────────────────────────────────

STUB = """
import collections, sys, time
sys.path.insert(0, %r)
from tests.stub_upstream import StubUpstream
stub = StubUpstream()
stub.requests = collections.deque(maxlen=100)  # 100,000 requests would grow the stub's record, not fastroute
stub.start()
print(stub.port, flush=True)
time.sleep(86400)
"""


def start_stub(children: Children) -> tuple[subprocess.Popen[str], int]:
    proc = children.popen([sys.executable, "-c", STUB % str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def write_config(path: Path, stub_port: int, tmp: Path) -> None:
    base = f"http://127.0.0.1:{stub_port}"
    path.write_text(f"""
[server]
workers = 1
dashboard = true
shutdown_grace_s = 2
max_body_bytes = {MAX_BODY}

[logging]
enabled = true
path = "{tmp / 'requests.jsonl'}"

[storage]
path = "{tmp / 'state.sqlite3'}"

[failover]
breaker_threshold = 1000000   # the stub fails on purpose; breakers have their own tests

[[providers]]
name = "stub"
format = "openai"
base_url = "{base}/v1"
models = ["stub-model"]

[[providers]]
name = "stub-anthropic"
format = "anthropic"
base_url = "{base}"

[[providers]]
name = "stub-ollama"
format = "ollama"
base_url = "{base}"

[[providers]]
name = "stub-impatient"
format = "openai"
base_url = "{base}/v1"
read_timeout = 0.5

[[routers]]
type = "prefix"
model_prefix = "a/"
provider = "stub-anthropic"

[[routers]]
type = "prefix"
model_prefix = "o/"
provider = "stub-ollama"

[[routers]]
type = "prefix"
model_prefix = "slowpoke"
provider = "stub-impatient"
rewrite_model = "stub-hang"

[[routers]]
type = "prefix"
model_prefix = "m-"        # the catch-all of made-up names
provider = "stub"

[[routers]]
type = "prefix"
model_prefix = "stub"
provider = "stub"
""")


async def drive(args: argparse.Namespace, url: str, router: Any, stub: Any) -> tuple[list[dict[str, Any]], Load]:
    import aiohttp

    load = Load(url, args.concurrency, args.seed, args.skip)
    rows: list[dict[str, Any]] = []
    events = [0]
    viewer = asyncio.create_task(watch_events(url, events))
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    t0 = time.monotonic()
    worker = worker_pid(router.pid)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        rows.append(reading(router.pid, worker, stub.pid, 0, t0))
        print(_row(rows[-1], None), file=sys.stderr)
        done = 0
        while done < args.requests:
            n = min(args.every, args.requests - done)
            started = time.monotonic()
            await load.batch(session, n)
            done += n
            await asyncio.sleep(1.0)  # let what the last requests left behind settle (closed streams, the log)
            row = reading(router.pid, worker, stub.pid, done, t0)
            row["req_per_s"] = round(n / (time.monotonic() - started - 1.0), 0)
            row["unexpected"] = sum(load.unexpected.values())
            row["events_seen"] = events[0]
            rows.append(row)
            print(_row(row, rows[1] if len(rows) > 2 else None), file=sys.stderr)
    viewer.cancel()
    await asyncio.gather(viewer, return_exceptions=True)
    return rows, load


def _row(r: dict[str, Any], base: dict[str, Any] | None) -> str:
    line = (f"{r['requests']:>7} req  {r['elapsed_s']:>6.0f} s  tree {r['rss_tree_mb']:6.1f} MB  worker "
            f"{r['rss_worker_mb']:6.1f} MB  fds {r['fds_worker']:>4}  threads {r['threads_worker']:>3}")
    if "req_per_s" in r:
        line += f"  {r['req_per_s']:>5.0f} req/s  unexpected {r['unexpected']}"
    if base is not None:
        line += f"  (worker {r['rss_worker_mb'] - base['rss_worker_mb']:+.1f} MB since {base['requests']})"
    return line


def verdict(rows: list[dict[str, Any]], concurrency: int) -> tuple[bool, str]:
    """Flat after warm-up: from the first reading after the warm-up on, the worker's RSS stays within
    3% (at least 3 MB) of that reading; its open files stay within what the connection pools explain
    (idle + 2 x concurrency + 8: the clients' keep-alive connections and fastroute's to the upstream)
    and do not trend up (the mean of the later half of the readings is no higher than the mean of
    the earlier half, + 3: single readings move by ±10 with the pools)."""
    idle, after = rows[0], rows[1:]
    if len(after) < 2:
        return False, "too few readings to tell"
    base = after[0]
    rss = [r["rss_worker_mb"] for r in after]
    fds = [r["fds_worker"] for r in after]
    slack = max(3.0, 0.03 * base["rss_worker_mb"])
    pools = idle["fds_worker"] + 2 * concurrency + 8
    half = max(1, len(fds) // 2)
    earlier, later = fds[:half], fds[half:] or fds[-1:]
    flat = (max(rss) - base["rss_worker_mb"] <= slack and max(fds) <= pools
            and sum(later) / len(later) <= sum(earlier) / len(earlier) + 3)
    return flat, (f"worker RSS {base['rss_worker_mb']:.1f} MB at {base['requests']:,} requests, "
                  f"{rss[-1]:.1f} MB at {after[-1]['requests']:,} (highest {max(rss):.1f}, allowed "
                  f"{base['rss_worker_mb'] + slack:.1f}); open files {idle['fds_worker']} idle, "
                  f"{min(fds)}-{max(fds)} after the warm-up (allowed {pools}), {fds[-1]} at the end")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--every", type=int, default=10_000, help="read memory and files every this many requests")
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--skip", action="append", default=[], metavar="WORDS",
                    help="leave out the kinds of request whose name holds these words (repeatable), "
                         "e.g. --skip 'count tokens' to keep the tokenizer (~140 MB) out of the worker")
    ap.add_argument("--json", metavar="PATH", help="write the readings here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    children = Children()
    started = time.monotonic()
    info = machine_info()
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory(prefix="fastroute-soak-") as tmp_name:
            tmp = Path(tmp_name)
            stub, stub_port = start_stub(children)
            wait_healthy(f"http://127.0.0.1:{stub_port}/api/tags", stub, None)
            conf = tmp / "soak.toml"
            write_config(conf, stub_port, tmp)
            port = free_port()
            log = tmp / "fastroute.log"
            with open(log, "wb") as log_file:
                router = children.popen([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port)],
                                        stdout=log_file, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": str(tmp)})
            url = f"http://127.0.0.1:{port}"
            wait_healthy(f"{url}/health", router, log)
            print(f"fastroute pid {router.pid} ({len(tree_pids(router.pid))} processes), stub pid {stub.pid}; "
                  f"{args.requests:,} requests at concurrency {args.concurrency}", file=sys.stderr)
            rows, load = loop.run_until_complete(drive(args, url, router, stub))
            code, _ = children.stop(router)
            log_lines = sum(1 for _ in open(tmp / "requests.jsonl", "rb"))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.kill_all()
        loop.close()
    wall = time.monotonic() - started
    flat, why = verdict(rows, args.concurrency)
    exchanges = sum(n for kind, n in load.counts.items() if kind not in NOT_EXCHANGES)
    print(f"\nsoak: {args.requests:,} requests in {rows[-1]['elapsed_s']:.0f} s at concurrency {args.concurrency} "
          f"({info['cpus_usable']} CPUs usable, {info.get('cpu_model', '?')}); unexpected answers: "
          f"{sum(load.unexpected.values())}; request log lines: {log_lines:,} for {exchanges:,} exchanges"
          f"{'' if log_lines == exchanges else ' (NOT one each)'}; fastroute exit code {code}")
    print(f"{'requests':>9} | {'RSS tree MB':>11} | {'RSS worker MB':>13} | {'fds worker':>10} | {'threads':>7} | {'req/s':>5}")
    for r in rows:
        print(f"{r['requests']:>9,} | {r['rss_tree_mb']:>11.1f} | {r['rss_worker_mb']:>13.1f} | {r['fds_worker']:>10} | "
              f"{r['threads_worker']:>7} | {r.get('req_per_s', ''):>5}")
    print(f"\n{'flat after warm-up' if flat else 'NOT flat after warm-up'}: {why}")
    if load.unexpected:
        print("unexpected answers by kind: " + ", ".join(f"{k}: {v}" for k, v in load.unexpected.most_common()))
        for s in load.samples[:12]:
            print("  " + s)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "settings": vars(args), "readings": rows, "flat": flat, "verdict": why,
            "counts": dict(load.counts), "unexpected": dict(load.unexpected), "samples": load.samples,
            "log_lines": log_lines, "exchanges": exchanges, "wall_s": wall}, indent=1))
    return 0 if flat and not load.unexpected and log_lines == exchanges else 1


if __name__ == "__main__":
    raise SystemExit(main())
