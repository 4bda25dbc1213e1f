"""Memory per open stream: what fastroute holds for each stream it relays, against the upstream's own.

    python benchmarks/open_streams.py [--streams 200] [--rounds 2] [--json out.json]

Three servers besides this process, on 127.0.0.1: the tests' aiohttp upstream
stub (``stub-slow``: a chunk every 50 ms for a minute), a bare Granian ASGI app
that streams the same way (the floor: what Granian itself holds per stream),
and a real ``fastroute serve`` (one worker) routing to the stub.  For each
round, this script opens N streams to each in turn, lets them flow for a few
seconds, reads the resident memory (VmRSS, from /proc) of the server's process
tree, closes them, and reads it again.  Reported per server:

- KB per open stream: (RSS with N streams open - RSS idle) / N;
- left after closing: what stays above idle.  Later rounds against the first
  show whether anything accumulates (Python and Granian keep freed memory, so
  "left" after round 1 is expected; growth round after round would be a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from e2e import free_port, tree_pids, wait_healthy  # noqa: E402  (one place for each)

FLOW_S = 3.0  # how long the open streams run before memory is read


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


def start_stub() -> tuple[subprocess.Popen[str], int]:
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from tests.stub_upstream import StubUpstream\n"
            "s = StubUpstream().start(); print(s.port, flush=True); time.sleep(3600)") % str(ROOT)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


BARE_APP = """
import asyncio

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
        for i in range(1200):
            await send({"type": "http.response.body", "body": b"data: {}\\n\\n", "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(stream()), asyncio.ensure_future(disconnected())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:  # a client that went away stops its stream, as fastroute's do
        task.cancel()
"""


def start_bare(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    (workdir / "bare_stream.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
                             "--port", str(port), "bare_stream:app"], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, None)  # any path answers 200 (and ends its stream when the probe goes)
    return proc, url


def start_fastroute(stub_port: int, conf: Path) -> tuple[subprocess.Popen[str], str]:
    conf.write_text(f'[server]\nshutdown_grace_s = 2\n\n[[providers]]\nname = "stub"\nformat = "openai"\n'
                    f'base_url = "http://127.0.0.1:{stub_port}/v1"\n\n'
                    '[[routers]]\ntype = "prefix"\nmodel_prefix = ""\nprovider = "stub"\n')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastroute", "serve", str(conf), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, None)
    return proc, url


async def hold_streams(url: str, n: int, measure: Any) -> dict[str, Any]:
    """Open ``n`` streams to ``url``, let them flow, call ``measure()``, close them; chunks seen per stream."""
    body = {"model": "stub-slow", "stream": True, "messages": [{"role": "user", "content": "hold"}]}
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
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(FLOW_S)
        figures = measure()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    figures["streams_with_data"] = sum(1 for c in chunks if c > 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fastroute-mem-"))
    stub, stub_port = start_stub()
    bare, bare_url = start_bare(workdir)
    router, router_url = start_fastroute(stub_port, workdir / "c.toml")
    servers = [("stub, direct (aiohttp)", f"http://127.0.0.1:{stub_port}", stub),
               ("bare Granian ASGI app", bare_url, bare),
               ("fastroute -> stub", router_url, router)]
    results: list[dict[str, Any]] = []
    try:
        for _ in range(20):  # warm up the stub and fastroute
            for url in (servers[0][1], router_url):
                httpx.post(f"{url}/v1/chat/completions", json={"model": "warm", "messages": [
                    {"role": "user", "content": "hi"}], "stream": True}, timeout=10)
        time.sleep(1.0)
        for rnd in range(1, args.rounds + 1):
            for label, url, proc in servers:
                idle = rss_kb(proc.pid)
                held = asyncio.run(hold_streams(url, args.streams, lambda p=proc: {"open": rss_kb(p.pid)}))
                time.sleep(1.5)  # the closes reach the server
                results.append({"round": rnd, "server": label, "streams": args.streams, "idle_kb": idle,
                                "open_kb": held["open"], "after_kb": rss_kb(proc.pid),
                                "streams_with_data": held["streams_with_data"]})
    finally:
        for proc in (router, bare, stub):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(10)
    n = args.streams
    print(f"\nmemory per open stream, {n} streams held {FLOW_S:g} s, each a chunk every 50 ms (RSS from /proc)")
    print(f"{'round':>5} {'server':<24} {'KB per open stream':>19} {'left after close MB':>20} {'flowing':>9}")
    for r in results:
        per = (r["open_kb"] - r["idle_kb"]) / n
        left = (r["after_kb"] - r["idle_kb"]) / 1024
        print(f"{r['round']:>5} {r['server']:<24} {per:19.1f} {left:20.2f} {r['streams_with_data']:>5}/{n}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
