"""Memory per open stream: what fastroute holds for each stream it relays, above bare Granian's own.

    python benchmarks/open_streams.py [--streams 1000] [--interval 1.0] [--rounds 2] [--json out.json]

Three servers besides this process, each in its own process group on 127.0.0.1:

- a paced upstream (this file, ``--upstream``: raw ``asyncio.Protocol`` HTTP/1.1 on uvloop) that
  answers a streamed chat with one OpenAI ``chat.completion.chunk`` event at once and then one
  every ``--interval`` seconds, for ten minutes (with two response headers; ``--openai-headers``:
  the 23 OpenAI's API sends);
- a bare Granian ASGI app (one worker) that streams the same way, and stops when its client goes:
  the floor, what Granian itself holds per stream;
- a real ``fastroute serve --workers 1`` routing to the upstream.

For each round, this script opens N streams to each server in turn, waits until every one has
its first event, lets them run ``--hold`` seconds, reads the resident memory (VmRSS, /proc) of
the server's process tree, closes them, and reads it again.  Reported per server:

- KB per open stream: (RSS with N streams open - RSS idle just before) / N;
- for fastroute, the same minus the bare Granian app's in the same round: what fastroute adds;
- left after closing: what stays above idle.  Python and Granian keep freed memory, so the first
  round is the figure; later rounds show whether anything accumulates (growth round after round
  would be a leak).

Streams are idle by default (an event a second: 1,000 streams are 1,000 events a second); with
``--interval 0.05`` 1,000 streams are 20,000 events a second, which one worker on a small machine
cannot keep up with, so the figure then holds a backlog of unread upstream data as well.

Before the idle figure is read, fastroute answers 600 requests, so that what it keeps of recent
requests whatever their number (the event feed's history of 500 events) is already full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
# one place for each: the loop, the port, the children, the wait
from e2e import Children, _new_loop, free_port, tree_pids, wait_healthy

MODEL = "bench-paced"
#: requests answered before the idle figure: the event feed's history (500 events) is then full
WARMUP = 600


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in KB."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ── the paced upstream ─────────────────────────────────────────────────────

def _event(i: int) -> bytes:
    data = json.dumps({"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                       "choices": [{"index": 0, "delta": {"content": f"tick{i} "}, "logprobs": None,
                                    "finish_reason": None}]}, separators=(",", ":")).encode()
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


COMPLETION = json.dumps({
    "id": "chatcmpl-paced", "object": "chat.completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "logprobs": None,
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}, separators=(",", ":")).encode()
JSON_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
               % (len(COMPLETION), COMPLETION))
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
#: what OpenAI's API sends with a stream (names and shapes of the values; 23 headers, ~1.1 KB)
OPENAI_HEAD = b"\r\n".join([
    b"HTTP/1.1 200 OK", b"date: Tue, 14 Jan 2025 10:00:00 GMT", b"content-type: text/event-stream; charset=utf-8",
    b"transfer-encoding: chunked", b"connection: keep-alive", b"access-control-expose-headers: X-Request-ID",
    b"openai-organization: user-abc123def456ghi789jkl0", b"openai-processing-ms: 187", b"openai-version: 2020-10-01",
    b"x-ratelimit-limit-requests: 10000", b"x-ratelimit-limit-tokens: 30000000",
    b"x-ratelimit-remaining-requests: 9999", b"x-ratelimit-remaining-tokens: 29999980",
    b"x-ratelimit-reset-requests: 6ms", b"x-ratelimit-reset-tokens: 0s",
    b"x-request-id: req_0123456789abcdef0123456789abcdef",
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload", b"cf-cache-status: DYNAMIC",
    b"set-cookie: __cf_bm=" + b"Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 4 + b"-1736848800-1.0.1.1-" + b"x" * 40
    + b"; path=/; expires=Tue, 14-Jan-25 10:30:00 GMT; domain=.api.openai.com; HttpOnly; Secure; SameSite=None",
    b"set-cookie: _cfuvid=" + b"Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2c" * 2 + b"-1736848800000-0.0.1.1-604800000"
    + b"; path=/; domain=.api.openai.com; HttpOnly; Secure; SameSite=None",
    b"x-content-type-options: nosniff", b"server: cloudflare", b"cf-ray: 8f1a2b3c4d5e6f70-AMS",
    b'alt-svc: h3=":443"; ma=86400', b"", b""])
LIFETIME_EVENTS = 600


def upstream_main(port: int, interval: float, stream_head: bytes = STREAM_HEAD) -> None:
    """One event at once, then one every ``interval`` s, by a timer per stream (no task)."""

    class Paced(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t, self.buf, self.timer, self.i = transport, b"", None, 0

        def data_received(self, data: bytes) -> None:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            if b'"stream":true' in body.replace(b" ", b""):
                self.t.write(stream_head)
                self.tick()
            else:
                self.t.write(JSON_ANSWER)

        def tick(self) -> None:
            if self.i >= LIFETIME_EVENTS:
                self.t.write(b"0\r\n\r\n")
                return
            self.t.write(_event(self.i))
            self.i += 1
            self.timer = asyncio.get_running_loop().call_later(interval, self.tick)

        def connection_lost(self, exc: BaseException | None) -> None:
            if self.timer is not None:
                self.timer.cancel()

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Paced, "127.0.0.1", port, backlog=4096))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


# ── the floor: a bare Granian ASGI app streaming the same way ─────────────

BARE_APP = """
import asyncio

INTERVAL = %r

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{done}.complete"})
            if done == "shutdown":
                return
    async def stream():
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(%d):
            await send({"type": "http.response.body", "body": b"data: {}\\n\\n", "more_body": True})
            await asyncio.sleep(INTERVAL)
        await send({"type": "http.response.body", "body": b""})

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(stream()), asyncio.ensure_future(disconnected())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:  # a client that went away stops its stream, as fastroute's do
        task.cancel()
"""


# ── the run ────────────────────────────────────────────────────────────────

def start_upstream(children: Children, interval: float, openai_headers: bool = False) -> int:
    port = free_port()
    proc = children.popen([sys.executable, str(Path(__file__).resolve()), "--upstream", str(port),
                           "--interval", str(interval), *(["--openai-headers"] if openai_headers else [])],
                          stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the paced upstream did not start")
    return port


def start_bare(children: Children, workdir: Path, interval: float) -> tuple[subprocess.Popen[str], str]:
    (workdir / "bare_stream.py").write_text(BARE_APP % (interval, LIFETIME_EVENTS))
    port = free_port()
    proc = children.popen([sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
                           "--workers", "1", "--working-dir", str(workdir), "--port", str(port), "bare_stream:app"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, None)  # any path answers 200 (and ends its stream when the probe goes)
    return proc, url


def start_fastroute(children: Children, upstream_port: int, conf: Path,
                    client: str = "lean") -> tuple[subprocess.Popen[str], str]:
    conf.write_text(f'[server]\nshutdown_grace_s = 2\nupstream_client = "{client}"\n\n[[providers]]\nname = "paced"\nformat = "openai"\n'
                    f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n\n'
                    '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "paced"\n')
    port = free_port()
    proc = children.popen([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port),
                           "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, None)
    return proc, url


async def hold_streams(url: str, n: int, hold_s: float, measure: Any) -> dict[str, Any]:
    """Open ``n`` streams to ``url``, wait for each one's first event, hold them, call ``measure()``,
    close them; how many saw more than their first event."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hold"}]}
    chunks = [0] * n
    started = asyncio.Event()
    opened = 0

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal opened
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            resp.raise_for_status()
            async for _ in resp.content.iter_any():
                if chunks[i] == 0:
                    opened += 1
                    if opened == n:
                        started.set()
                chunks[i] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(n)]
        done, _ = await asyncio.wait([asyncio.ensure_future(started.wait()), *tasks], timeout=120,
                                     return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t in tasks]
        if failed:
            raise RuntimeError(f"a stream to {url} failed: {failed[0].exception()!r}")
        await asyncio.sleep(hold_s)
        figures = measure()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    figures["streams_with_data"] = sum(1 for c in chunks if c > 1)
    return figures


def warm_up(url: str, count: int, plain: bool = True) -> None:
    """``count`` requests, one in ten a stream (read to its first event, then dropped)."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=10) as client:
        for i in range(count):
            if plain and i % 10:
                client.post(f"{url}/v1/chat/completions", json=ask)
                continue
            with client.stream("POST", f"{url}/v1/chat/completions", json={**ask, "stream": True}) as r:
                next(r.iter_raw())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a stream's events (default 1)")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds the open streams run before memory is read")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--openai-headers", action="store_true",
                    help="the upstream sends the 23 response headers OpenAI's API sends with a stream (~1.1 KB)")
    ap.add_argument("--client", default="lean", help="fastroute's upstream client (lean, aiohttp, httpx)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        upstream_main(args.upstream, args.interval, OPENAI_HEAD if args.openai_headers else STREAM_HEAD)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="fastroute-mem-"))
    children = Children()
    results: list[dict[str, Any]] = []
    try:
        upstream_port = start_upstream(children, args.interval, args.openai_headers)
        bare, bare_url = start_bare(children, workdir, args.interval)
        router, router_url = start_fastroute(children, upstream_port, workdir / "c.toml", args.client)
        servers = [("bare Granian ASGI app", bare_url, bare), ("fastroute -> upstream", router_url, router)]
        warm_up(router_url, WARMUP)
        warm_up(bare_url, 20, plain=False)
        time.sleep(1.0)
        for rnd in range(1, args.rounds + 1):
            for label, url, proc in servers:
                idle = rss_kb(proc.pid)
                held = asyncio.run(hold_streams(url, args.streams, args.hold, lambda p=proc: {"open": rss_kb(p.pid)}))
                time.sleep(1.5)  # the closes reach the server
                results.append({"round": rnd, "server": label, "streams": args.streams, "interval_s": args.interval,
                                "openai_headers": args.openai_headers,
                                "idle_kb": idle, "open_kb": held["open"], "after_kb": rss_kb(proc.pid),
                                "streams_with_data": held["streams_with_data"]})
    finally:
        children.kill_all()
    n = args.streams
    print(f"\nmemory per open stream: {n} streams held {args.hold:g} s, an event every {args.interval:g} s, "
          f"{'OpenAI' if args.openai_headers else 'two'} upstream headers, one worker (RSS of the process tree, /proc)")
    print(f"{'round':>5} {'server':<24} {'KB per open stream':>19} {'above bare Granian':>19} "
          f"{'left after close MB':>20} {'flowing':>10}")
    floor: dict[int, float] = {}
    for r in results:
        per = (r["open_kb"] - r["idle_kb"]) / n
        r["kb_per_stream"] = round(per, 2)
        above = ""
        if r["server"].startswith("bare"):
            floor[r["round"]] = per
        elif r["round"] in floor:
            r["kb_above_bare"] = round(per - floor[r["round"]], 2)
            above = f"{per - floor[r['round']]:19.1f}"
        left = (r["after_kb"] - r["idle_kb"]) / 1024
        print(f"{r['round']:>5} {r['server']:<24} {per:19.1f} {above:>19} {left:20.2f} "
              f"{r['streams_with_data']:>5}/{n}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
